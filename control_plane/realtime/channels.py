"""Litestar channels on Redis pub/sub: which channels a message goes to, and which a client reads.

Routing happens when a message is published: an agent's messages go to the
admins' channel and to its owner's channel, so a socket only ever receives what
its user may read and no socket filters anything. The owner is read when the
message is published, so a change of owner routes the next message to the new
owner (and the change itself to both).

Each user also has a control channel that carries no data, only "check your
credential now": published when a credential of the user ends (logout,
suspension, a revoked API token, a role change), so that every replica's
sockets of that user recheck at once instead of at their next periodic check.
"""

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from litestar.channels import ChannelsPlugin, Subscriber
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from redis.asyncio.connection import parse_url

from control_plane.auth.principals import UserPrincipal
from control_plane.settings import Settings

log = logging.getLogger("iron.control_plane")

RECONNECT_S = 0.5
RECHECK = b"recheck"  # a control channel's only message
REDIS_TIMEOUT_S = 5.0  # above the pub/sub reader's 1 s poll


@dataclass(frozen=True, slots=True)
class Routing:
    """Channel names. Pub/sub is server-wide while keys live in numbered databases, so the names
    carry the database number: two deployments on one Redis server never hear each other."""

    prefix: str

    @classmethod
    def for_redis(cls, redis_url: str) -> "Routing":
        return cls(f"iron:ws:{parse_url(redis_url).get('db', 0)}")

    @property
    def admins(self) -> str:
        return f"{self.prefix}:admins"

    def owner(self, user_id: str) -> str:
        return f"{self.prefix}:owner:{user_id}"

    def control(self, user_id: str) -> str:
        """The user's credential notices (:data:`RECHECK`), read by each of their sockets along with
        its data channel (one subscription) and never forwarded to the client."""
        return f"{self.prefix}:control:{user_id}"

    def routes(self, *owner_ids: str) -> list[str]:
        """The channels a message about an agent of these owners (now, and before a change of
        owner) is published to: each channel once."""
        return [self.admins, *dict.fromkeys(map(self.owner, owner_ids))]

    def channel_of(self, user: UserPrincipal) -> str:
        """The one channel a user's socket reads: admins read every agent, others their own."""
        return self.admins if user.is_admin else self.owner(user.user_id)


class BoundedSubscriber(Subscriber):
    """A subscriber whose overflow is noticed: a client that fell ``backlog`` messages behind is
    dropped, instead of silently missing messages or holding memory for ever."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.overflowed = asyncio.Event()

    def put_nowait(self, item: bytes | None) -> bool:
        accepted = super().put_nowait(item)
        if not accepted:
            self.overflowed.set()
        return accepted

    async def put(self, item: bytes | None) -> None:
        """The plugin's stop signal (``None``) must not wait behind a backlog nobody will read."""
        if item is None:
            while self.qsize:
                self._queue.get_nowait()
                self._queue.task_done()
        await super().put(item)


class ReconnectingPubSubBackend(RedisChannelsPubSubBackend):
    """The pub/sub backend, resumed after a Redis outage: the stock one ends its stream on the first
    connection error, which would leave this replica's sockets silent for good. After an error the
    subscription is made again on a fresh connection (a restarted Redis knows none of it).

    Subscribing is serialised: redis-py's PubSub opens its connection on the first command, and two
    sockets subscribing at once on a fresh PubSub each opened one; the second replaced the first,
    whose channels then went unread (their messages were lost until the process restarted).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._subscribing = asyncio.Lock()

    async def subscribe(self, channels: Iterable[str]) -> None:
        async with self._subscribing:
            await super().subscribe(channels)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        async with self._subscribing:
            await super().unsubscribe(channels)

    async def stream_events(self) -> AsyncGenerator[tuple[str, Any], None]:
        lost: list[str] | None = None  # the channels to subscribe again, after an error
        while True:
            try:
                if lost is not None:
                    await self._pub_sub.aclose()  # type: ignore[no-untyped-call]  # forget the broken connection
                    if lost:
                        await self.subscribe(lost)
                    lost = None
                async for event in super().stream_events():
                    yield event
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("realtime: Redis pub/sub unavailable (%s); retrying", type(exc).__name__)
                if lost is None:
                    lost = [channel.decode() for channel in self._pub_sub.channels]
                await asyncio.sleep(RECONNECT_S)


def plugin(settings: Settings) -> ChannelsPlugin:
    return ChannelsPlugin(
        # timeouts, so that a Redis going down mid-handshake is an error to retry, not a hang
        backend=ReconnectingPubSubBackend(
            redis=redis.Redis.from_url(
                settings.redis_url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
            )
        ),
        arbitrary_channels_allowed=True,
        subscriber_max_backlog=settings.ws_backlog,
        subscriber_backlog_strategy="backoff",
        subscriber_class=BoundedSubscriber,
    )
