"""SQL of IC tokens. Only SHA-256 hashes are stored; a value is shown once, at creation.

A token of a deleted agent is never live and never listed. Callers that change
an agent's tokens hold the agent's row lock, so "one live token per agent" is
decided under it (and the partial unique index ``ic_tokens_one_live`` backs it).
"""

from dataclasses import dataclass
from datetime import datetime

from control_plane.auth.secrets import new_token, token_hash
from control_plane.lib.db import Conn, Executor
from iron import ids


@dataclass(frozen=True, slots=True)
class IssuedToken:
    id: str
    token: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TokenOwner:
    token_id: str
    agent_id: str


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A token's metadata, with the agent it belongs to."""

    id: str
    agent_id: str
    agent_name: str
    owner_id: str
    created_at: datetime
    revoked_at: datetime | None


_SELECT = (
    "SELECT t.id, t.agent_id, a.name AS agent_name, a.owner_id, t.created_at, t.revoked_at"
    " FROM ic_tokens t JOIN agents a ON a.id = t.agent_id"
)


async def insert(conn: Conn, agent_id: str) -> IssuedToken:
    """A new token for an agent that has no live one."""
    token_id, token = ids.new_id(ids.IC_TOKEN), new_token(ids.IC_TOKEN)
    created_at = await conn.fetchval(
        "INSERT INTO ic_tokens (id, agent_id, token_hash) VALUES ($1, $2, $3) RETURNING created_at",
        token_id,
        agent_id,
        token_hash(token),
    )
    return IssuedToken(token_id, token, created_at)


async def issue(conn: Conn, agent_id: str) -> IssuedToken:
    """Revoke the agent's live token, if any, and issue a new one: call inside a transaction."""
    await revoke_for_agent(conn, agent_id)
    return await insert(conn, agent_id)


async def revoke_for_agent(conn: Executor, agent_id: str) -> bool:
    status = await conn.execute(
        "UPDATE ic_tokens SET revoked_at = now() WHERE agent_id = $1 AND revoked_at IS NULL",
        agent_id,
    )
    return bool(status != "UPDATE 0")


async def owner(conn: Executor, token: str) -> TokenOwner | None:
    """The live token's agent, if the agent is live too."""
    row = await conn.fetchrow(
        "SELECT t.id, t.agent_id FROM ic_tokens t JOIN agents a ON a.id = t.agent_id"
        " WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND a.status = 'active'",
        token_hash(token),
    )
    return TokenOwner(row["id"], row["agent_id"]) if row else None


async def by_id(conn: Executor, token_id: str) -> TokenRow | None:
    row = await conn.fetchrow(f"{_SELECT} WHERE t.id = $1 AND a.status <> 'deleted'", token_id)
    return TokenRow(**row) if row else None


async def live_for_agent(conn: Executor, agent_id: str) -> TokenRow | None:
    row = await conn.fetchrow(
        f"{_SELECT} WHERE t.agent_id = $1 AND t.revoked_at IS NULL AND a.status <> 'deleted'", agent_id
    )
    return TokenRow(**row) if row else None


@dataclass(frozen=True, slots=True)
class TokenFilter:
    owner_id: str | None = None  # None: every owner's agents (admins)
    agent_id: str | None = None
    live: bool | None = None
    search: str | None = None  # an ILIKE pattern on the agent's name


SORTABLE = {"created_at": "t.created_at", "agent_name": "a.name"}


async def list_page(
    conn: Executor, where: TokenFilter, order_by: str, limit: int, offset: int
) -> tuple[list[TokenRow], int]:
    """One page of tokens and the total; ``order_by`` comes from :data:`SORTABLE` only."""
    condition = (
        "a.status <> 'deleted' AND ($1::text IS NULL OR a.owner_id = $1)"
        " AND ($2::text IS NULL OR t.agent_id = $2)"
        " AND ($3::bool IS NULL OR (t.revoked_at IS NULL) = $3)"
        " AND ($4::text IS NULL OR a.name ILIKE $4)"
    )
    args = (where.owner_id, where.agent_id, where.live, where.search)
    total = await conn.fetchval(
        f"SELECT count(*) FROM ic_tokens t JOIN agents a ON a.id = t.agent_id WHERE {condition}", *args
    )
    rows = await conn.fetch(
        f"{_SELECT} WHERE {condition} ORDER BY {order_by} LIMIT $5 OFFSET $6", *args, limit, offset
    )
    return [TokenRow(**row) for row in rows], int(total)
