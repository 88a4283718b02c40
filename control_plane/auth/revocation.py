"""Revoked access tokens and sessions, in Redis so that a logout holds on every replica at once.

An entry is keyed by a token's ``jti`` or a session's id and lives until every token
it covers would have expired anyway, so the set stays small.
"""

from datetime import datetime

import redis.asyncio as redis

from iron.timefmt import utcnow


def _key(revoked_id: str) -> str:
    return f"iron:revoked:{revoked_id}"


async def revoke(client: redis.Redis, revoked_id: str, expires_at: datetime) -> None:
    ttl_ms = int((expires_at - utcnow()).total_seconds() * 1000)
    if ttl_ms > 0:
        await client.set(_key(revoked_id), b"1", px=ttl_ms)


async def is_revoked(client: redis.Redis, *revoked_ids: str) -> bool:
    """Whether any of the ids (a token's jti, its session) is revoked: one round trip."""
    return bool(await client.exists(*map(_key, revoked_ids)))
