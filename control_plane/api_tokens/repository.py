"""SQL of API tokens. Only SHA-256 hashes are stored; a value is shown once, at creation or rotation."""

from dataclasses import dataclass
from datetime import datetime

from control_plane.auth.secrets import token_hash
from control_plane.lib.db import Executor


@dataclass(frozen=True, slots=True)
class ApiTokenRow:
    id: str
    user_id: str
    name: str
    status: str  # active, revoked or expired
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


_STATUS = (
    "CASE WHEN revoked_at IS NOT NULL THEN 'revoked'"
    " WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired' ELSE 'active' END"
)
_COLUMNS = f"id, user_id, name, {_STATUS} AS status, created_at, last_used_at, expires_at, revoked_at"
_LIVE = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
STATUSES = ("active", "revoked", "expired")


@dataclass(frozen=True, slots=True)
class TokenOwner:
    user_id: str
    expires_at: datetime | None


async def owner(conn: Executor, token: str) -> TokenOwner | None:
    """The user of a live token (not revoked, not expired), or None.

    Marks the token used, at most once a minute, so a busy script does not write on every call.
    """
    row = await conn.fetchrow(
        f"WITH t AS (SELECT id, user_id, expires_at, last_used_at FROM api_tokens"
        f"  WHERE token_hash = $1 AND {_LIVE}),"
        " touched AS (UPDATE api_tokens a SET last_used_at = now() FROM t WHERE a.id = t.id"
        "  AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute'))"
        " SELECT user_id, expires_at FROM t",
        token_hash(token),
    )
    return TokenOwner(**row) if row else None


async def insert(
    conn: Executor, *, token_id: str, user_id: str, name: str, token: str, expires_at: datetime | None
) -> ApiTokenRow:
    row = await conn.fetchrow(
        "INSERT INTO api_tokens (id, user_id, name, token_hash, expires_at) VALUES ($1, $2, $3, $4, $5)"
        f" RETURNING {_COLUMNS}",
        token_id,
        user_id,
        name,
        token_hash(token),
        expires_at,
    )
    assert row is not None
    return ApiTokenRow(**row)


async def by_id(conn: Executor, token_id: str) -> ApiTokenRow | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM api_tokens WHERE id = $1", token_id)
    return ApiTokenRow(**row) if row else None


async def revoke(conn: Executor, token_id: str) -> ApiTokenRow | None:
    """Revoke a token that is not revoked yet; the updated row, or None."""
    row = await conn.fetchrow(
        f"UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING {_COLUMNS}",
        token_id,
    )
    return ApiTokenRow(**row) if row else None


async def rotate(conn: Executor, token_id: str, token: str) -> ApiTokenRow | None:
    """Give a live token a new value; the old value stops matching in the same statement."""
    row = await conn.fetchrow(
        f"UPDATE api_tokens SET token_hash = $2, last_used_at = NULL WHERE id = $1 AND {_LIVE}"
        f" RETURNING {_COLUMNS}",
        token_id,
        token_hash(token),
    )
    return ApiTokenRow(**row) if row else None


async def revoke_all_of(conn: Executor, user_id: str) -> int:
    """Revoke every unrevoked token of the user; how many."""
    revoked: int = await conn.fetchval(
        "WITH r AS (UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL"
        " RETURNING 1) SELECT count(*) FROM r",
        user_id,
    )
    return revoked


@dataclass(frozen=True, slots=True)
class ApiTokenFilter:
    user_id: str | None = None  # None: every user's tokens (admins)
    status: str | None = None
    search: str | None = None  # an ILIKE pattern, on the name


SORTABLE = {
    "name": "lower(name)",
    "created_at": "created_at",
    "last_used_at": "last_used_at",
    "expires_at": "expires_at",
}


async def list_page(
    conn: Executor, where: ApiTokenFilter, order_by: str, limit: int, offset: int
) -> tuple[list[ApiTokenRow], int]:
    """One page of tokens and the total; ``order_by`` comes from :data:`SORTABLE` only."""
    condition = (
        f"($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR {_STATUS} = $2)"
        " AND ($3::text IS NULL OR name ILIKE $3)"
    )
    args = (where.user_id, where.status, where.search)
    total = await conn.fetchval(f"SELECT count(*) FROM api_tokens WHERE {condition}", *args)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM api_tokens WHERE {condition} ORDER BY {order_by} LIMIT $4 OFFSET $5",
        *args,
        limit,
        offset,
    )
    return [ApiTokenRow(**row) for row in rows], int(total)
