"""``GET /ws``: the live feed for dashboards.

The first message must be ``{"type": "auth", "token": ...}`` with a user token
(JWT or API token). Then the socket reads one channel (every agent for admins,
its user's own agents otherwise), gets a STATE_UPDATE snapshot, and from then on
every message published to that channel plus a HEARTBEAT. Its credential is
checked again at once when the user's control channel says one of their
credentials ended (logout, suspension, deletion, a revoked or rotated API token,
a role change), and every few seconds anyway in case that notice was lost. One
task per socket sends everything, in order; a client that falls too far behind
is dropped so it costs the others nothing. Connection attempts and failed
handshakes are limited per IP (:mod:`control_plane.realtime.limits`).
"""

import asyncio
import contextlib
import functools
import itertools
import logging
import random
from collections.abc import Awaitable
from typing import Any

import asyncpg
import redis.asyncio as redis
from litestar import WebSocket, websocket
from litestar.channels import ChannelsPlugin
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect

from control_plane.agents import repository as agents
from control_plane.auth.principals import UserPrincipal, authenticate
from control_plane.lib.db import pool_of
from control_plane.lib.errors import ApiError
from control_plane.realtime import limits
from control_plane.realtime.channels import RECHECK, BoundedSubscriber, Routing
from control_plane.realtime.publisher import agent_state
from control_plane.settings import Settings
from iron import realtime as wire
from iron.timefmt import iso, utcnow
from iron.validation import InvalidBody, decode

log = logging.getLogger("iron.control_plane")

SNAPSHOT_LIMIT = 1000
_RECHECKS = asyncio.Semaphore(4)  # credential checks of this process's sockets running at once
CLOSING_TIMEOUT_S = 1.0  # a last message or close frame to a client that stopped reading

Closing = tuple[int, wire.ErrorBody]


def _now() -> str:
    return iso(utcnow())


class _Refused(Exception):
    """The socket is refused; ``closing`` says with which code and why."""

    def __init__(self, closing: Closing) -> None:
        super().__init__(closing[1].code)
        self.closing = closing


def _closing_for(exc: ApiError) -> Closing:
    code = wire.CLOSE_FORBIDDEN if exc.status == 403 else wire.CLOSE_UNAUTHORIZED
    return code, wire.ErrorBody(code=exc.code, message=exc.message)


async def _close(socket: WebSocket[Any, Any, Any], closing: Closing) -> None:
    code, error = closing
    with contextlib.suppress(WebSocketDisconnect, TimeoutError, OSError):
        async with asyncio.timeout(CLOSING_TIMEOUT_S):
            await socket.send_text(wire.encode(wire.Error(timestamp=_now(), error=error)))
            await socket.close(code, error.code)


async def _handshake(socket: WebSocket[Any, Any, Any], settings: Settings) -> tuple[str, UserPrincipal]:
    """The token and its user; raises :class:`_Refused` with the reason to close."""
    try:
        async with asyncio.timeout(settings.ws_auth_timeout_s):
            text = await socket.receive_text()
    except TimeoutError:
        error = wire.ErrorBody(code="AUTH_TIMEOUT", message="No auth message in time")
        raise _Refused((wire.CLOSE_AUTH_TIMEOUT, error)) from None
    try:
        auth = decode(text.encode(), wire.Auth)
    except InvalidBody as exc:
        error = wire.ErrorBody(code="VALIDATION_ERROR", message=exc.message, fields=exc.fields)
        raise _Refused((wire.CLOSE_BAD_MESSAGE, error)) from None
    try:
        _, user = await authenticate(socket.app.state, auth.token)
    except ApiError as exc:
        raise _Refused(_closing_for(exc)) from None
    return auth.token, user


async def _snapshot(pool: asyncpg.Pool, user: UserPrincipal) -> bytes:
    where = agents.AgentFilter(owner_id=None if user.is_admin else user.user_id)
    rows, total = await agents.list_page(pool, where, "a.created_at, a.id", SNAPSHOT_LIMIT, 0)
    return wire.encode(wire.StateUpdate(timestamp=_now(), agents=[agent_state(r) for r in rows], total=total))


@functools.lru_cache(maxsize=64)
def _frames(payload: bytes) -> tuple[str, ...]:
    """A published payload as WebSocket text frames: split and decoded once, not once per socket."""
    return tuple(payload.decode().split("\n"))


async def _send_all(
    socket: WebSocket[Any, Any, Any], subscriber: BoundedSubscriber, notified: asyncio.Event
) -> None:
    """Everything the subscription delivers, but a credential notice, which wakes :func:`_recheck`."""
    async for payload in subscriber.iter_events():
        if payload == RECHECK:
            notified.set()
            continue
        for frame in _frames(payload):
            await socket.send_text(frame)


async def _heartbeats(subscriber: BoundedSubscriber, interval_s: float) -> None:
    """Queued behind the events, so a client that stopped reading stops getting them too."""
    while True:
        await asyncio.sleep(interval_s)
        subscriber.put_nowait(wire.encode(wire.Heartbeat(timestamp=_now())))


async def _recheck(
    socket: WebSocket[Any, Any, Any],
    token: str,
    user: UserPrincipal,
    interval_s: float,
    notified: asyncio.Event,
) -> Closing:
    """Ends when the credential no longer holds (logout, suspension, expiry) or the role changed.

    Checks once at the start: a notice published between the handshake's check and the
    subscription was missed, and this catches what it said. Then at once on a notice of the
    user's control channel, else every ``interval_s``. Every socket of the user checks its own
    credential: that is what keeps another session's socket open after a logout, or a JWT socket
    after its user's API token was revoked.
    Sockets that connected together are spread over the interval, and only a few checks run at
    once per process, so a thousand sockets never take the database pool from the requests.
    """
    waits = itertools.chain([random.uniform(0, interval_s)], itertools.repeat(interval_s))
    while True:
        try:
            async with _RECHECKS:
                _, now = await authenticate(socket.app.state, token)
        except ApiError as exc:
            return _closing_for(exc)
        except (redis.RedisError, OSError, asyncpg.PostgresError) as exc:
            log.warning("realtime: could not recheck a socket's credential (%s)", type(exc).__name__)
        else:
            if now.role != user.role:
                return wire.CLOSE_UNAUTHORIZED, wire.ErrorBody(
                    code="AUTH_ROLE_CHANGED", message="The user's role changed; connect again"
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(notified.wait(), next(waits))
        notified.clear()


async def _overflow(subscriber: BoundedSubscriber) -> Closing:
    await subscriber.overflowed.wait()
    log.info("realtime: dropped a client %d messages behind", subscriber.qsize)
    return wire.CLOSE_TOO_SLOW, wire.ErrorBody(code="CLIENT_TOO_SLOW", message="Too many unread messages")


async def _until_disconnect(socket: WebSocket[Any, Any, Any]) -> None:
    """Reads and ignores what the client sends after auth, to notice when it goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await socket.receive_data("text")


async def _first(*jobs: Awaitable[Any]) -> Any:
    """Run the jobs until one ends; cancel the rest; its result (or error)."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return next(iter(done)).result()


async def _serve(
    socket: WebSocket[Any, Any, Any], channels: ChannelsPlugin, token: str, user: UserPrincipal
) -> Closing | None:
    settings: Settings = socket.app.state.settings
    routing: Routing = socket.app.state.ws_routing
    notified = asyncio.Event()
    async with channels.start_subscription(
        [routing.channel_of(user), routing.control(user.user_id)]
    ) as subscriber:
        assert isinstance(subscriber, BoundedSubscriber)
        # subscribed before the snapshot is read, so no change falls between the two
        subscriber.put_nowait(await _snapshot(pool_of(socket.app.state), user))
        closing: Closing | None = await _first(
            _send_all(socket, subscriber, notified),
            _heartbeats(subscriber, settings.ws_heartbeat_s),
            _recheck(socket, token, user, settings.ws_recheck_s, notified),
            _overflow(subscriber),
            _until_disconnect(socket),
        )
        return closing


@websocket("/ws")
async def feed(socket: WebSocket[Any, Any, Any], channels: NamedDependency[ChannelsPlugin]) -> None:
    await socket.accept()
    try:
        nonce, refusal = await limits.admit(socket)
        if refusal is not None:
            raise _Refused((wire.CLOSE_RATE_LIMITED, refusal))
        token, user = await _handshake(socket, socket.app.state.settings)
        await limits.handshake_succeeded(socket, nonce)
        closing = await _serve(socket, channels, token, user)
    except _Refused as refused:
        closing = refused.closing
    except (WebSocketDisconnect, OSError):  # the client went away (uvicorn's is an OSError)
        return
    except (redis.RedisError, asyncpg.PostgresError) as exc:
        log.warning("realtime: a socket ended on %s", type(exc).__name__)
        closing = 1011, wire.ErrorBody(code="SERVICE_UNAVAILABLE", message="The feed is unavailable; retry")
    if closing is not None:
        await _close(socket, closing)


handlers = [feed]
