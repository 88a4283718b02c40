"""Login throttling per client IP: 5 failed attempts per fixed 5-minute window, in Redis.

Only failures count. Behind one office NAT many people share an IP; counting their
successful logins would lock them all out for nothing, while a password-guesser
fails by definition. Once an IP has used up its failures, every attempt from it is
refused (429) until the window ends, the right password included, so guessing on
gets no answers at all. The window starts at the first attempt; counts live in
Redis so that all replicas share them.

The IP is the connection's peer address. ``X-Forwarded-For`` is not trusted here:
anyone could send it. Behind a proxy, have the ASGI server rewrite the peer
address from the proxy's header (uvicorn ``--proxy-headers --forwarded-allow-ips``).
"""

import math
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import redis.asyncio as redis

from control_plane.lib.errors import ApiError
from iron.timefmt import iso

LIMIT = 5
WINDOW_S = 300


@dataclass(frozen=True, slots=True)
class Attempt:
    """One login attempt, counted in its IP's window until it is forgiven."""

    ip: str
    id: str
    counted: int  # attempts in the window, this one included while it is not forgiven
    resets_in_ms: int  # until the window ends

    @property
    def reset_epoch_s(self) -> int:
        return math.ceil(time.time() + self.resets_in_ms / 1000)

    @property
    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(LIMIT),
            "X-RateLimit-Remaining": str(max(LIMIT - self.counted, 0)),
            "X-RateLimit-Reset": str(self.reset_epoch_s),
        }

    def refusal(self) -> ApiError:
        retry_after = max(math.ceil(self.resets_in_ms / 1000), 1)
        return ApiError(
            429,
            "RATE_LIMIT_EXCEEDED",
            f"Too many failed login attempts (max {LIMIT} per {WINDOW_S // 60} minutes)",
            details={
                "limit": LIMIT,
                "window_seconds": WINDOW_S,
                "retry_after_seconds": retry_after,
                "reset_at": iso(datetime.fromtimestamp(self.reset_epoch_s, UTC)),
            },
            headers={**self.headers, "Retry-After": str(retry_after)},
        )


def _key(ip: str) -> str:
    return f"iron:login-failures:{ip}"


async def begin(client: redis.Redis, ip: str) -> Attempt:
    """Count an attempt before its password is checked, or refuse it (429) beyond the limit.

    Counting first is what holds against many guesses sent at once: each takes its place
    in one atomic step, so the sixth is refused however close together they arrive. The
    window is a set of attempt ids; the first one sets its expiry.
    """
    attempt_id = uuid.uuid4().hex
    async with client.pipeline(transaction=True) as pipe:
        pipe.sadd(_key(ip), attempt_id)
        pipe.expire(_key(ip), WINDOW_S, nx=True)
        pipe.scard(_key(ip))
        pipe.pttl(_key(ip))
        _, _, counted, pttl = await pipe.execute()
    attempt = Attempt(ip, attempt_id, int(counted), max(int(pttl), 1))
    if attempt.counted > LIMIT:
        await forgive(client, attempt)  # a refused attempt takes no place in the window
        raise attempt.refusal()
    return attempt


async def forgive(client: redis.Redis, attempt: Attempt) -> Attempt:
    """Take back an attempt that gave the right password: only failures count.

    Removing a set member is safe even after the window has ended, unlike a decrement.
    """
    await client.srem(_key(attempt.ip), attempt.id)
    return replace(attempt, counted=attempt.counted - 1)
