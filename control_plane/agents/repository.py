"""SQL of agents (the ledger columns are written only by the budget domain)."""

from dataclasses import dataclass
from datetime import datetime

from control_plane.lib.db import Conn, Executor


@dataclass(frozen=True, slots=True)
class AgentRow:
    id: str
    name: str
    description: str | None
    tags: list[str]
    owner_id: str
    project_id: str | None
    status: str
    budget_micros: int
    spent_micros: int
    outstanding_micros: int
    overdrawn_micros: int
    providers: list[str]
    created_at: datetime
    updated_at: datetime


_SELECT = (
    "SELECT a.id, a.name, a.description, a.tags, a.owner_id, a.project_id, a.status,"
    " a.budget_micros, a.spent_micros, a.outstanding_micros, a.overdrawn_micros, a.created_at, a.updated_at,"
    " coalesce(array(SELECT ap.provider_id FROM agent_providers ap"
    "  WHERE ap.agent_id = a.id ORDER BY ap.position), '{}') AS providers"
    " FROM agents a"
)


async def insert(
    conn: Conn,
    *,
    agent_id: str,
    name: str,
    description: str | None,
    tags: list[str],
    owner_id: str,
    project_id: str | None,
    budget_micros: int,
    provider_ids: list[str],
) -> None:
    await conn.execute(
        "INSERT INTO agents (id, name, description, tags, owner_id, project_id, budget_micros)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        agent_id,
        name,
        description,
        tags,
        owner_id,
        project_id,
        budget_micros,
    )
    await conn.execute(
        "INSERT INTO agent_providers (agent_id, provider_id, position)"
        " SELECT $1, p, n FROM unnest($2::text[]) WITH ORDINALITY AS t(p, n)",
        agent_id,
        provider_ids,
    )


async def by_id(conn: Executor, agent_id: str) -> AgentRow | None:
    row = await conn.fetchrow(f"{_SELECT} WHERE a.id = $1 AND a.status <> 'deleted'", agent_id)
    return AgentRow(**row) if row else None


@dataclass(frozen=True, slots=True)
class AgentFilter:
    owner_id: str | None = None  # None: every owner (admins)
    status: str | None = None
    project_id: str | None = None
    search: str | None = None  # an ILIKE pattern


SORTABLE = {
    "name": "a.name",
    "created_at": "a.created_at",
    "budget": "a.budget_micros",
    "spent": "a.spent_micros",
}


async def list_page(
    conn: Executor, where: AgentFilter, order_by: str, limit: int, offset: int
) -> tuple[list[AgentRow], int]:
    """One page of agents and the total; ``order_by`` comes from :data:`SORTABLE` only."""
    condition = (
        "a.status <> 'deleted' AND ($1::text IS NULL OR a.owner_id = $1)"
        " AND ($2::text IS NULL OR a.status = $2) AND ($3::text IS NULL OR a.project_id = $3)"
        " AND ($4::text IS NULL OR a.name ILIKE $4 OR a.description ILIKE $4)"
    )
    args = (where.owner_id, where.status, where.project_id, where.search)
    total = await conn.fetchval(f"SELECT count(*) FROM agents a WHERE {condition}", *args)
    rows = await conn.fetch(
        f"{_SELECT} WHERE {condition} ORDER BY {order_by} LIMIT $5 OFFSET $6", *args, limit, offset
    )
    return [AgentRow(**row) for row in rows], int(total)
