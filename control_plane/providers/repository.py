"""SQL of providers. Keys go in and out sealed; this module never sees a plaintext key."""

from dataclasses import dataclass
from datetime import datetime

from control_plane.lib.db import Executor


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


async def existing_ids(conn: Executor, provider_ids: list[str]) -> set[str]:
    rows = await conn.fetch("SELECT id FROM providers WHERE id = ANY($1::text[])", provider_ids)
    return {row["id"] for row in rows}


async def for_agent(conn: Executor, agent_id: str, wanted: str | None = None) -> SealedKey | None:
    """The agent's provider: ``wanted`` (an id, name or type) among its assigned ones, else its first."""
    row = await conn.fetchrow(
        f"SELECT {', '.join('p.' + c for c in _COLUMNS.split(', '))}, p.key_ciphertext"
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
