"""SQL of sessions: refresh tokens (stored hashed), grouped in families.

A login starts a family; each refresh marks its token used and adds the next one
to the same family. The family id is the session id that access tokens carry.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from control_plane.lib.db import Conn, Executor


async def insert_refresh_token(
    conn: Executor, token_hash: bytes, user_id: str, family_id: str, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at) VALUES ($1, $2, $3, $4)",
        token_hash,
        user_id,
        family_id,
        expires_at,
    )


@dataclass(frozen=True, slots=True)
class RefreshRow:
    user_id: str
    family_id: str
    used: bool
    revoked: bool
    expired: bool


async def refresh_for_update(conn: Conn, token_hash: bytes) -> RefreshRow | None:
    """The token, row-locked, so that two refreshes with it are told apart: one rotates, one is reuse."""
    row = await conn.fetchrow(
        "SELECT user_id, family_id, used_at IS NOT NULL AS used, revoked_at IS NOT NULL AS revoked,"
        " expires_at <= now() AS expired FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
        token_hash,
    )
    return RefreshRow(**row) if row else None


async def mark_used(conn: Executor, token_hash: bytes) -> None:
    await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1", token_hash)


async def revoke_family(conn: Executor, family_id: str) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
        family_id,
    )


async def revoke_user_sessions(conn: Executor, user_id: str) -> int:
    """Revoke every live refresh token of the user; the number of sessions this ended."""
    ended: int = await conn.fetchval(
        "WITH revoked AS (UPDATE refresh_tokens SET revoked_at = now()"
        " WHERE user_id = $1 AND revoked_at IS NULL AND used_at IS NULL AND expires_at > now()"
        " RETURNING family_id) SELECT count(DISTINCT family_id) FROM revoked",
        user_id,
    )
    return ended


#: How long a refresh token's row outlives its use: a token presented within this time after it
#: expired or was revoked is still told apart (expired, revoked) from one that never existed.
DEAD_ROW_RETENTION = timedelta(days=1)


async def delete_dead_refresh_tokens(conn: Executor, batch: int) -> int:
    """Delete up to ``batch`` rows of refresh tokens that expired or were revoked over a day ago;
    how many went. A used token that has not expired stays: presented again, it is how a
    stolen session is detected."""
    deleted: int = await conn.fetchval(
        "WITH dead AS (DELETE FROM refresh_tokens WHERE token_hash IN (SELECT token_hash FROM refresh_tokens"
        " WHERE expires_at < now() - $2::interval OR revoked_at < now() - $2::interval LIMIT $1) RETURNING 1)"
        " SELECT count(*) FROM dead",
        batch,
        DEAD_ROW_RETENTION,
    )
    return deleted
