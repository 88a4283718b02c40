"""SQL of agents (the ledger columns are written only by the budget domain).

A deleted agent stays as a row (its history refers to it) with status ``deleted``:
nothing here reads it back, but for the live feed's last word on it.
"""

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
    await _assign(conn, agent_id, provider_ids)


async def _assign(conn: Conn, agent_id: str, provider_ids: list[str]) -> None:
    """The providers, in the order given: the first is the agent's default."""
    await conn.execute(
        "INSERT INTO agent_providers (agent_id, provider_id, position)"
        " SELECT $1, p, n FROM unnest($2::text[]) WITH ORDINALITY AS t(p, n)",
        agent_id,
        provider_ids,
    )


async def by_id(conn: Executor, agent_id: str, *, with_deleted: bool = False) -> AgentRow | None:
    row = await conn.fetchrow(
        f"{_SELECT} WHERE a.id = $1 AND ($2 OR a.status <> 'deleted')", agent_id, with_deleted
    )
    return AgentRow(**row) if row else None


async def lock(conn: Conn, agent_id: str) -> AgentRow | None:
    """The live agent, its row locked until the caller's transaction ends (the ledger's lock, too)."""
    row = await conn.fetchrow(
        f"{_SELECT} WHERE a.id = $1 AND a.status <> 'deleted' FOR UPDATE OF a", agent_id
    )
    return AgentRow(**row) if row else None


async def update(conn: Conn, agent: AgentRow) -> None:
    """Write the agent's own fields: name, description, tags, project and owner (never its money)."""
    await conn.execute(
        "UPDATE agents SET name = $2, description = $3, tags = $4, project_id = $5, owner_id = $6,"
        " updated_at = now() WHERE id = $1",
        agent.id,
        agent.name,
        agent.description,
        agent.tags,
        agent.project_id,
        agent.owner_id,
    )


async def set_providers(conn: Conn, agent_id: str, provider_ids: list[str]) -> None:
    await conn.execute("DELETE FROM agent_providers WHERE agent_id = $1", agent_id)
    await _assign(conn, agent_id, provider_ids)
    await _touch(conn, agent_id)


async def remove_provider(conn: Conn, agent_id: str, provider_id: str) -> bool:
    status = await conn.execute(
        "DELETE FROM agent_providers WHERE agent_id = $1 AND provider_id = $2", agent_id, provider_id
    )
    if status == "DELETE 0":
        return False
    await _touch(conn, agent_id)
    return True


async def _touch(conn: Conn, agent_id: str) -> None:
    await conn.execute("UPDATE agents SET updated_at = now() WHERE id = $1", agent_id)


async def mark_deleted(conn: Conn, agent_id: str) -> None:
    await conn.execute("UPDATE agents SET status = 'deleted', updated_at = now() WHERE id = $1", agent_id)


@dataclass(frozen=True, slots=True)
class Activity:
    """What the agent's runtimes reported, and its open leases."""

    requests: int
    completed: int
    failed: int
    last_request_at: datetime | None
    open_leases: int


async def activity(conn: Executor, agent_id: str) -> Activity:
    row = await conn.fetchrow(
        "SELECT coalesce(sum(requests), 0)::bigint AS requests,"
        " coalesce(sum(requests - failed), 0)::bigint AS completed,"
        " coalesce(sum(failed), 0)::bigint AS failed, max(last_at) AS last_request_at,"
        " (SELECT count(*) FROM leases WHERE agent_id = $1 AND status = 'open') AS open_leases"
        " FROM usage_rollups WHERE grain = 'month' AND scope = $1",  # the agent's own rows, all time
        agent_id,
    )
    assert row is not None  # an aggregate always has its row
    return Activity(**row)


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
