"""SQL of projects: a project is read with totals over its live agents."""

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from control_plane.lib.db import Conn, Executor


@dataclass(frozen=True, slots=True)
class ProjectRow:
    id: str
    name: str
    description: str | None
    created_at: datetime
    updated_at: datetime
    agent_count: int
    user_count: int  # distinct owners of those agents
    budget: int
    spent: int


# $1: count only this owner's agents (NULL: everyone's).
_SELECT = (
    "SELECT p.id, p.name, p.description, p.created_at, p.updated_at, t.agent_count, t.user_count,"
    " t.budget, t.spent FROM projects p CROSS JOIN LATERAL"
    " (SELECT count(*) AS agent_count, count(DISTINCT a.owner_id) AS user_count,"
    "  coalesce(sum(a.budget_micros), 0)::bigint AS budget,"
    "  coalesce(sum(a.spent_micros), 0)::bigint AS spent"
    "  FROM agents a WHERE a.project_id = p.id AND a.status <> 'deleted'"
    "  AND ($1::text IS NULL OR a.owner_id = $1)) t"
)


async def insert(conn: Executor, *, project_id: str, name: str, description: str | None) -> bool:
    """False when the name is taken."""
    status = await conn.execute(
        "INSERT INTO projects (id, name, description) VALUES ($1, $2, $3)"
        " ON CONFLICT (lower(name)) DO NOTHING",
        project_id,
        name,
        description,
    )
    return bool(status == "INSERT 0 1")


async def by_id(conn: Executor, project_id: str, owner_id: str | None) -> ProjectRow | None:
    row = await conn.fetchrow(f"{_SELECT} WHERE p.id = $2", owner_id, project_id)
    return ProjectRow(**row) if row else None


async def lock(conn: Conn, project_id: str) -> ProjectRow | None:
    """The project (totals over everyone's agents), its row locked until the transaction ends."""
    row = await conn.fetchrow(f"{_SELECT} WHERE p.id = $2 FOR UPDATE OF p", None, project_id)
    return ProjectRow(**row) if row else None


async def update(conn: Conn, project: ProjectRow) -> bool:
    """Write the name and description; False when the name is taken."""
    try:
        await conn.execute(
            "UPDATE projects SET name = $2, description = $3, updated_at = now() WHERE id = $1",
            project.id,
            project.name,
            project.description,
        )
    except asyncpg.UniqueViolationError:
        return False
    return True


async def exists(conn: Executor, project_id: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM projects WHERE id = $1)", project_id))


SORTABLE = {"name": "lower(p.name)", "created_at": "p.created_at"}


async def list_page(
    conn: Executor, owner_id: str | None, search: str | None, order_by: str, limit: int, offset: int
) -> tuple[list[ProjectRow], int]:
    """One page of projects and the total; ``order_by`` comes from :data:`SORTABLE` only.

    ``search`` is an ILIKE pattern on the name; ``owner_id`` scopes the totals.
    """
    total = await conn.fetchval(
        "SELECT count(*) FROM projects p WHERE $1::text IS NULL OR p.name ILIKE $1", search
    )
    rows = await conn.fetch(
        f"{_SELECT} WHERE $2::text IS NULL OR p.name ILIKE $2 ORDER BY {order_by} LIMIT $3 OFFSET $4",
        owner_id,
        search,
        limit,
        offset,
    )
    return [ProjectRow(**row) for row in rows], int(total)
