"""SQL of budget-change requests.

A request is read together with its agent's live ledger and the names of the
people involved. Transitions lock the request row; an approval, which also
changes the agent's budget, locks the agent first (see :mod:`.service`).
"""

from dataclasses import dataclass
from datetime import datetime

from control_plane.lib.db import Conn, Executor


@dataclass(frozen=True, slots=True)
class RequestRow:
    id: str
    agent_id: str
    agent_name: str
    agent_status: str
    requester_id: str
    requester_name: str
    current_budget: int
    requested_budget: int
    approved_budget: int | None
    justification: str
    status: str
    reviewer_id: str | None
    review_notes: str | None
    created_at: datetime
    updated_at: datetime
    reviewed_at: datetime | None
    agent_budget: int
    agent_spent: int
    agent_outstanding: int


@dataclass(frozen=True, slots=True)
class LockedRequest:
    id: str
    status: str
    requested_budget: int


_SELECT = (
    "SELECT r.id, r.agent_id, a.name AS agent_name, a.status AS agent_status,"
    " r.requester_id, u.name AS requester_name,"
    " r.current_budget_micros AS current_budget, r.requested_budget_micros AS requested_budget,"
    " r.approved_budget_micros AS approved_budget, r.justification, r.status,"
    " r.reviewer_id, r.review_notes, r.created_at, r.updated_at, r.reviewed_at,"
    " a.budget_micros AS agent_budget, a.spent_micros AS agent_spent,"
    " a.outstanding_micros AS agent_outstanding"
    " FROM budget_requests r JOIN agents a ON a.id = r.agent_id JOIN users u ON u.id = r.requester_id"
)


async def insert(
    conn: Executor,
    *,
    request_id: str,
    agent_id: str,
    requester_id: str,
    current_budget: int,
    requested_budget: int,
    justification: str,
) -> None:
    await conn.execute(
        "INSERT INTO budget_requests (id, agent_id, requester_id, current_budget_micros,"
        " requested_budget_micros, justification) VALUES ($1, $2, $3, $4, $5, $6)",
        request_id,
        agent_id,
        requester_id,
        current_budget,
        requested_budget,
        justification,
    )


async def by_id(conn: Executor, request_id: str) -> RequestRow | None:
    row = await conn.fetchrow(f"{_SELECT} WHERE r.id = $1", request_id)
    return RequestRow(**row) if row else None


async def lock(conn: Conn, request_id: str) -> LockedRequest | None:
    """The request's row, locked until the caller's transaction ends: its status is final for it."""
    row = await conn.fetchrow(
        "SELECT id, status, requested_budget_micros AS requested_budget"
        " FROM budget_requests WHERE id = $1 FOR UPDATE",
        request_id,
    )
    return LockedRequest(**row) if row else None


async def review(
    conn: Conn,
    request_id: str,
    status: str,
    reviewer_id: str | None,
    notes: str | None,
    approved_budget: int | None,
) -> None:
    await conn.execute(
        "UPDATE budget_requests SET status = $2, reviewer_id = $3, review_notes = $4,"
        " approved_budget_micros = $5, reviewed_at = now(), updated_at = now() WHERE id = $1",
        request_id,
        status,
        reviewer_id,
        notes,
        approved_budget,
    )


async def cancel(conn: Conn, request_id: str) -> None:
    """Who cancelled is in the audit log; reviewer fields stay for reviews."""
    await conn.execute(
        "UPDATE budget_requests SET status = 'cancelled', updated_at = now() WHERE id = $1", request_id
    )


@dataclass(frozen=True, slots=True)
class RequestFilter:
    requester_id: str | None = None  # None: every requester (admins)
    status: str | None = None
    agent_id: str | None = None
    search: str | None = None  # an ILIKE pattern, on the agent's name and the justification


SORTABLE = {
    "created_at": "r.created_at",
    "requested_budget": "r.requested_budget_micros",
}


async def list_page(
    conn: Executor, where: RequestFilter, order_by: str, limit: int, offset: int
) -> tuple[list[RequestRow], int]:
    """One page of requests and the total; ``order_by`` comes from :data:`SORTABLE` only."""
    condition = (
        "($1::text IS NULL OR r.requester_id = $1) AND ($2::text IS NULL OR r.status = $2)"
        " AND ($3::text IS NULL OR r.agent_id = $3)"
        " AND ($4::text IS NULL OR a.name ILIKE $4 OR r.justification ILIKE $4)"
    )
    args = (where.requester_id, where.status, where.agent_id, where.search)
    total = await conn.fetchval(
        f"SELECT count(*) FROM budget_requests r JOIN agents a ON a.id = r.agent_id WHERE {condition}", *args
    )
    rows = await conn.fetch(
        f"{_SELECT} WHERE {condition} ORDER BY {order_by} LIMIT $5 OFFSET $6", *args, limit, offset
    )
    return [RequestRow(**row) for row in rows], int(total)


async def cancel_pending(
    conn: Conn, *, agent_id: str | None = None, requester_id: str | None = None
) -> list[str]:
    """End the pending requests of an agent or of a requester that is going away; their ids.

    Callers hold the agent's (or the user's agents') row locks first: agent, then request.
    """
    if (agent_id is None) == (requester_id is None):
        raise ValueError("give exactly one of agent_id and requester_id")
    rows = await conn.fetch(
        "UPDATE budget_requests SET status = 'cancelled', updated_at = now()"
        " WHERE status = 'pending' AND (agent_id = $1 OR requester_id = $2) RETURNING id",
        agent_id,
        requester_id,
    )
    return [row["id"] for row in rows]
