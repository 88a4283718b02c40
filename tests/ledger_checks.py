"""The ledger invariants of DESIGN.md section 4, recomputed from raw rows."""

from dataclasses import dataclass

import asyncpg

# Every table the migrations create; a refused request may change none of them.
ALL_TABLES = (
    "users",
    "refresh_tokens",
    "projects",
    "providers",
    "agents",
    "agent_providers",
    "ic_tokens",
    "leases",
    "usage_events",
    "budget_changes",
    "budget_requests",
    "api_tokens",
    "audit_logs",
)


@dataclass(frozen=True)
class LedgerState:
    budget: int
    spent: int
    outstanding: int
    overdrawn: int

    @property
    def available(self) -> int:
        return self.budget - self.spent - self.outstanding


async def assert_ledger_invariants(pool: asyncpg.Pool, agent_id: str) -> LedgerState:
    agent = await pool.fetchrow(
        "SELECT budget_micros, spent_micros, outstanding_micros, overdrawn_micros FROM agents WHERE id = $1",
        agent_id,
    )
    events_total = await pool.fetchval(
        "SELECT coalesce(sum(cost_micros), 0) FROM usage_events WHERE agent_id = $1", agent_id
    )
    leases = await pool.fetch(
        "SELECT l.granted_micros, l.spent_micros, l.overdrawn_micros, l.status,"
        " (SELECT coalesce(sum(cost_micros), 0) FROM usage_events e WHERE e.lease_id = l.id) AS events"
        " FROM leases l WHERE l.agent_id = $1",
        agent_id,
    )
    state = LedgerState(*agent)
    # spent is the sum of distinct reported costs
    assert state.spent == events_total, (state, events_total)
    # every lease's spent is the sum of the events reported on it
    for lease in leases:
        assert lease["spent_micros"] == lease["events"], dict(lease)
    # outstanding is the unused part of the open leases
    expected_outstanding = sum(
        max(lease["granted_micros"] - lease["spent_micros"], 0)
        for lease in leases
        if lease["status"] == "open"
    )
    assert state.outstanding == expected_outstanding, (state, expected_outstanding)
    # never more out than in, except usage beyond a grant, which is recorded
    assert state.spent + state.outstanding <= state.budget + state.overdrawn, state
    assert state.overdrawn == sum(lease["overdrawn_micros"] for lease in leases), state
    return state
