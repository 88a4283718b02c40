"""SQL of the ledger. Every function that changes money runs inside the caller's
transaction, after :func:`lock_agent`: one agent's ledger changes one at a time,
across every control-plane process, and lock order is always agent, then lease.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from control_plane.lib.db import Conn, Executor


@dataclass(frozen=True, slots=True)
class AgentLedger:
    agent_id: str
    budget: int
    spent: int
    outstanding: int
    active: bool


@dataclass(frozen=True, slots=True)
class LeaseRow:
    id: str
    agent_id: str
    holder: str | None
    granted: int
    spent: int
    status: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class UsageRow:
    event_id: str
    cost: int
    input_tokens: int
    output_tokens: int
    model: str
    provider: str
    status: str
    latency_ms: int | None
    occurred_at: datetime


_LEASE_COLUMNS = "id, agent_id, holder, granted_micros AS granted, spent_micros AS spent, status, expires_at"


_LEDGER_COLUMNS = "id, budget_micros, spent_micros, outstanding_micros, status = 'active'"


async def lock_agent(conn: Conn, agent_id: str) -> AgentLedger | None:
    row = await conn.fetchrow(
        f"SELECT {_LEDGER_COLUMNS} FROM agents WHERE id = $1 FOR UPDATE",
        agent_id,
    )
    return AgentLedger(*row) if row else None


async def ledger_of(conn: Executor, agent_id: str) -> AgentLedger | None:
    row = await conn.fetchrow(f"SELECT {_LEDGER_COLUMNS} FROM agents WHERE id = $1", agent_id)
    return AgentLedger(*row) if row else None


async def lock_lease(conn: Conn, lease_id: str, agent_id: str) -> LeaseRow | None:
    row = await conn.fetchrow(
        f"SELECT {_LEASE_COLUMNS} FROM leases WHERE id = $1 AND agent_id = $2 FOR UPDATE",
        lease_id,
        agent_id,
    )
    return LeaseRow(**row) if row else None


async def open_lease(
    conn: Conn,
    *,
    lease_id: str,
    agent_id: str,
    holder: str | None,
    granted: int,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "UPDATE agents SET outstanding_micros = outstanding_micros + $2 WHERE id = $1",
        agent_id,
        granted,
    )
    await conn.execute(
        "INSERT INTO leases (id, agent_id, holder, granted_micros, expires_at) VALUES ($1, $2, $3, $4, $5)",
        lease_id,
        agent_id,
        holder,
        granted,
        expires_at,
    )


async def top_up_lease(
    conn: Conn, lease: LeaseRow, granted: int, added: int, expires_at: datetime
) -> LeaseRow:
    """Grow the lease's grant by ``granted``; ``added`` of it becomes outstanding."""
    await conn.execute(
        "UPDATE agents SET outstanding_micros = outstanding_micros + $2 WHERE id = $1",
        lease.agent_id,
        added,
    )
    row = await conn.fetchrow(
        "UPDATE leases SET granted_micros = granted_micros + $2,"
        " expires_at = greatest(expires_at, $3) WHERE id = $1"
        f" RETURNING {_LEASE_COLUMNS}",
        lease.id,
        granted,
        expires_at,
    )
    assert row is not None  # the caller holds the lease's lock
    return LeaseRow(**row)


async def insert_usage(
    conn: Conn, agent_id: str, lease_id: str | None, events: Sequence[UsageRow]
) -> tuple[set[str], int]:
    """Insert the events that are new; return their ids and the sum of their costs.

    The primary key ``(agent_id, event_id)`` makes replays, and duplicates within
    one batch, insert nothing: each LLM call is counted once.
    """
    rows = await conn.fetch(
        "INSERT INTO usage_events (agent_id, event_id, lease_id, cost_micros, input_tokens,"
        " output_tokens, model, provider, status, latency_ms, occurred_at)"
        " SELECT $1, e.event_id, $2, e.cost, e.input_tokens, e.output_tokens, e.model,"
        "  e.provider, e.status, e.latency_ms, e.occurred_at"
        " FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[],"
        "  $8::text[], $9::text[], $10::int[], $11::timestamptz[])"
        "  AS e(event_id, cost, input_tokens, output_tokens, model, provider, status,"
        "  latency_ms, occurred_at)"
        " ON CONFLICT (agent_id, event_id) DO NOTHING RETURNING event_id, cost_micros",
        agent_id,
        lease_id,
        [e.event_id for e in events],
        [e.cost for e in events],
        [e.input_tokens for e in events],
        [e.output_tokens for e in events],
        [e.model for e in events],
        [e.provider for e in events],
        [e.status for e in events],
        [e.latency_ms for e in events],
        [e.occurred_at for e in events],
    )
    return {row["event_id"] for row in rows}, sum(row["cost_micros"] for row in rows)


async def charge(
    conn: Conn,
    lease: LeaseRow,
    cost: int,
    released: int,
    extend_to: datetime | None,
) -> LeaseRow:
    """Add ``cost`` to the agent's and the lease's spent; ``released`` leaves outstanding.

    The part of ``cost`` that no grant covered is recorded as overdrawn.
    """
    await conn.execute(
        "UPDATE agents SET spent_micros = spent_micros + $2,"
        " outstanding_micros = outstanding_micros - $3,"
        " overdrawn_micros = overdrawn_micros + $2 - $3 WHERE id = $1",
        lease.agent_id,
        cost,
        released,
    )
    row = await conn.fetchrow(
        "UPDATE leases SET spent_micros = spent_micros + $2,"
        " overdrawn_micros = overdrawn_micros + $2 - $4,"
        " expires_at = CASE WHEN $3::timestamptz IS NULL THEN expires_at"
        "  ELSE greatest(expires_at, $3) END"
        f" WHERE id = $1 RETURNING {_LEASE_COLUMNS}",
        lease.id,
        cost,
        extend_to,
        released,
    )
    assert row is not None  # the caller holds the lease's lock
    return LeaseRow(**row)


async def close_lease(conn: Conn, lease: LeaseRow, status: str, unused: int) -> None:
    await conn.execute(
        "UPDATE agents SET outstanding_micros = outstanding_micros - $2 WHERE id = $1",
        lease.agent_id,
        unused,
    )
    await conn.execute("UPDATE leases SET status = $2, closed_at = now() WHERE id = $1", lease.id, status)


async def agents_with_expired_leases(conn: Executor, now: datetime, limit: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT agent_id FROM leases WHERE status = 'open' AND expires_at <= $1 LIMIT $2",
        now,
        limit,
    )
    return [row["agent_id"] for row in rows]


async def open_leases(conn: Conn, agent_id: str) -> list[LeaseRow]:
    """Every open lease of the agent, locked: for closing them all (the agent is going away)."""
    rows = await conn.fetch(
        f"SELECT {_LEASE_COLUMNS} FROM leases WHERE agent_id = $1 AND status = 'open' FOR UPDATE",
        agent_id,
    )
    return [LeaseRow(**row) for row in rows]


async def expired_leases(conn: Conn, agent_id: str, now: datetime) -> list[LeaseRow]:
    rows = await conn.fetch(
        f"SELECT {_LEASE_COLUMNS} FROM leases"
        " WHERE agent_id = $1 AND status = 'open' AND expires_at <= $2 FOR UPDATE",
        agent_id,
        now,
    )
    return [LeaseRow(**row) for row in rows]


async def set_budget(
    conn: Conn,
    agent_id: str,
    old: int,
    new: int,
    changed_by: str | None,
    reason: str | None,
) -> None:
    await conn.execute(
        "UPDATE agents SET budget_micros = $2, updated_at = now() WHERE id = $1", agent_id, new
    )
    await conn.execute(
        "INSERT INTO budget_changes (agent_id, old_micros, new_micros, changed_by, reason)"
        " VALUES ($1, $2, $3, $4, $5)",
        agent_id,
        old,
        new,
        changed_by,
        reason,
    )


async def budget_history(conn: Executor, agent_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, old_micros, new_micros, changed_by, reason, created_at FROM budget_changes"
        " WHERE agent_id = $1 ORDER BY created_at DESC, id DESC",
        agent_id,
    )
