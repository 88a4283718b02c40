"""SQL of providers. Keys go in and out sealed; this module never sees a plaintext key."""

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from control_plane.lib.db import Conn, Executor


@dataclass(frozen=True, slots=True)
class ProviderRow:
    id: str
    name: str
    type: str
    endpoint: str
    models: list[str]
    status: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SealedKey:
    provider: ProviderRow
    key_ciphertext: bytes


_COLUMNS = "id, name, type, endpoint, models, status, created_at, updated_at"


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{column}" for column in _COLUMNS.split(", "))


async def insert(
    conn: Executor,
    *,
    provider_id: str,
    name: str,
    type_: str,
    endpoint: str,
    models: list[str],
    key_ciphertext: bytes,
) -> ProviderRow | None:
    """None when the name is taken."""
    row = await conn.fetchrow(
        "INSERT INTO providers (id, name, type, endpoint, models, key_ciphertext)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (lower(name)) DO NOTHING"
        f" RETURNING {_COLUMNS}",
        provider_id,
        name,
        type_,
        endpoint,
        models,
        key_ciphertext,
    )
    return ProviderRow(**row) if row else None


async def by_id(conn: Executor, provider_id: str) -> ProviderRow | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM providers WHERE id = $1", provider_id)
    return ProviderRow(**row) if row else None


async def lock(conn: Conn, provider_id: str) -> ProviderRow | None:
    """The provider, its row locked: no agent can be assigned to it until the transaction ends."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM providers WHERE id = $1 FOR UPDATE", provider_id)
    return ProviderRow(**row) if row else None


async def update(conn: Conn, provider: ProviderRow, key_ciphertext: bytes | None) -> ProviderRow | None:
    """Write the provider's fields, and its key when one is given. None when the name is taken."""
    try:
        row = await conn.fetchrow(
            "UPDATE providers SET name = $2, type = $3, endpoint = $4, models = $5, status = $6,"
            " key_ciphertext = coalesce($7, key_ciphertext), updated_at = now()"
            f" WHERE id = $1 RETURNING {_COLUMNS}",
            provider.id,
            provider.name,
            provider.type,
            provider.endpoint,
            provider.models,
            provider.status,
            key_ciphertext,
        )
    except asyncpg.UniqueViolationError:
        return None
    assert row is not None  # the caller holds the row's lock
    return ProviderRow(**row)


async def delete(conn: Conn, provider_id: str) -> list[str]:
    """Delete the provider and its assignments; return the live agents it was assigned to.

    Call with the provider's row locked, so that no assignment can slip in between.
    """
    rows = await conn.fetch(
        "WITH gone AS (DELETE FROM agent_providers WHERE provider_id = $1 RETURNING agent_id)"
        " SELECT a.id FROM gone JOIN agents a ON a.id = gone.agent_id WHERE a.status <> 'deleted'"
        " ORDER BY a.id",
        provider_id,
    )
    await conn.execute("DELETE FROM providers WHERE id = $1", provider_id)
    return [row["id"] for row in rows]


@dataclass(frozen=True, slots=True)
class Usage:
    """Usage reported under the provider's type or name, and the agents assigned to it."""

    requests: int
    spent: int
    last_request_at: datetime | None
    agents: int


async def usage(conn: Executor, provider: ProviderRow, owner_id: str | None) -> Usage:
    """``owner_id``: count only that user's agents (None: everyone's).

    ``usage_events.provider`` is the free-text label a runtime reported, so an
    event belongs to every provider whose type or name it names. Read from the
    monthly rollups (labels in lower case there): all agents' rows, or the owner's agents' own.
    """
    row = await conn.fetchrow(
        "SELECT coalesce(sum(r.requests), 0)::bigint AS requests,"
        " coalesce(sum(r.cost_micros), 0)::bigint AS spent, max(r.last_at) AS last_request_at,"
        " (SELECT count(*) FROM agent_providers ap JOIN agents a ON a.id = ap.agent_id"
        "  WHERE ap.provider_id = $1 AND a.status <> 'deleted'"
        "  AND ($4::text IS NULL OR a.owner_id = $4)) AS agents"
        " FROM usage_rollups r WHERE r.grain = 'month' AND r.provider IN (lower($2), lower($3))"
        " AND CASE WHEN $4::text IS NULL THEN r.scope = ''"
        "  ELSE r.scope IN (SELECT a.id FROM agents a WHERE a.owner_id = $4) END",
        provider.id,
        provider.type,
        provider.name,
        owner_id,
    )
    assert row is not None  # an aggregate always has its row
    return Usage(**row)


async def assigned_to(conn: Executor, agent_id: str) -> list[ProviderRow]:
    """The agent's providers, its default first."""
    rows = await conn.fetch(
        f"SELECT {_prefixed('p')} FROM agent_providers ap JOIN providers p ON p.id = ap.provider_id"
        " WHERE ap.agent_id = $1 ORDER BY ap.position",
        agent_id,
    )
    return [ProviderRow(**row) for row in rows]


@dataclass(frozen=True, slots=True)
class ProviderFilter:
    type: str | None = None
    status: str | None = None
    search: str | None = None  # an ILIKE pattern on the name


SORTABLE = {"name": "lower(name)", "type": "type", "created_at": "created_at"}


async def list_page(
    conn: Executor, where: ProviderFilter, order_by: str, limit: int, offset: int
) -> tuple[list[ProviderRow], int]:
    """One page of providers and the total; ``order_by`` comes from :data:`SORTABLE` only."""
    condition = (
        "($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR status = $2)"
        " AND ($3::text IS NULL OR name ILIKE $3)"
    )
    args = (where.type, where.status, where.search)
    total = await conn.fetchval(f"SELECT count(*) FROM providers WHERE {condition}", *args)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM providers WHERE {condition} ORDER BY {order_by} LIMIT $4 OFFSET $5",
        *args,
        limit,
        offset,
    )
    return [ProviderRow(**row) for row in rows], int(total)


async def existing_ids(conn: Executor, provider_ids: list[str]) -> set[str]:
    """Those that exist; in a transaction, they cannot be deleted until it ends (an assignment may follow)."""
    rows = await conn.fetch("SELECT id FROM providers WHERE id = ANY($1::text[]) FOR KEY SHARE", provider_ids)
    return {row["id"] for row in rows}


async def for_agent(conn: Executor, agent_id: str, wanted: str | None = None) -> SealedKey | None:
    """The agent's provider: ``wanted`` (an id, name or type) among its assigned ones, else its first."""
    row = await conn.fetchrow(
        f"SELECT {_prefixed('p')}, p.key_ciphertext"
        " FROM agent_providers ap JOIN providers p ON p.id = ap.provider_id"
        " WHERE ap.agent_id = $1 AND p.status = 'active'"
        " AND ($2::text IS NULL OR p.id = $2 OR lower(p.name) = lower($2) OR p.type = $2)"
        " ORDER BY ap.position LIMIT 1",
        agent_id,
        wanted,
    )
    if row is None:
        return None
    fields = dict(row)
    ciphertext = fields.pop("key_ciphertext")
    return SealedKey(ProviderRow(**fields), ciphertext)
