"""Per-IP limits of ``/ws``: connection attempts, and failed handshakes.

Without them one client could open sockets without end, or try tokens as fast as it
can open sockets. Both count in Redis with the API's limiter, so they hold across
replicas; the numbers, and why a dashboard never meets them, are in
:data:`control_plane.lib.ratelimit.DEFAULT_RULES` (``ws_connect``, ``ws_auth_failure``,
set with ``IRON_RATE_LIMITS`` like the others). A handshake counts as failed before
it is read and is forgotten once it succeeds (the login throttle's idea): a burst of
bad tokens cannot slip past the limit by arriving together. With Redis down the
limiter fails open, and the feed stays up.
"""

import uuid
from typing import Any

from litestar import WebSocket

from control_plane.lib import ratelimit
from iron import realtime as wire


async def admit(socket: WebSocket[Any, Any, Any]) -> tuple[str, wire.ErrorBody | None]:
    """Count a connection attempt and, until it succeeds, a failed handshake: the failure's
    nonce (for :func:`handshake_succeeded`) and, over either limit, why the socket is refused."""
    ip, nonce = ratelimit.client_ip(socket), uuid.uuid4().hex
    for category, what, entry in (
        (ratelimit.WS_CONNECT, "connection attempts", None),
        (ratelimit.WS_AUTH_FAILURE, "failed handshakes", nonce),
    ):
        decision = await ratelimit.count(socket.app.state, category, ip, nonce=entry)
        if decision is not None and not decision.allowed:
            message = f"Too many {what} from this address; retry in {decision.retry_after} s"
            return nonce, wire.ErrorBody(code="RATE_LIMIT_EXCEEDED", message=message)
    return nonce, None


async def handshake_succeeded(socket: WebSocket[Any, Any, Any], nonce: str) -> None:
    await ratelimit.forget(socket.app.state, ratelimit.WS_AUTH_FAILURE, ratelimit.client_ip(socket), nonce)
