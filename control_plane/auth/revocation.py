"""Revoked access tokens, in Redis so that a logout holds on every replica at once.

An entry lives until the token would have expired anyway, so the set stays small.
"""

from datetime import datetime

import redis.asyncio as redis

from iron.timefmt import utcnow


def _key(jti: str) -> str:
    return f"iron:revoked:{jti}"


async def revoke(client: redis.Redis, jti: str, expires_at: datetime) -> None:
    ttl_ms = int((expires_at - utcnow()).total_seconds() * 1000)
    if ttl_ms > 0:
        await client.set(_key(jti), b"1", px=ttl_ms)


async def is_revoked(client: redis.Redis, jti: str) -> bool:
    return bool(await client.exists(_key(jti)))
