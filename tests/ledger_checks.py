"""The ledger invariants of DESIGN.md section 4, recomputed from raw rows."""

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
    "usage_event_ids",
    "usage_rollups",
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
    events_total, leaseless, events, ids = await pool.fetchrow(
        "SELECT coalesce(sum(cost_micros), 0), coalesce(sum(cost_micros) FILTER (WHERE lease_id IS NULL), 0),"
        " count(*), (SELECT count(*) FROM usage_event_ids WHERE agent_id = $1)"
        " FROM usage_events WHERE agent_id = $1",
        agent_id,
    )
    leases = await pool.fetch(
        "SELECT l.granted_micros, l.spent_micros, l.overdrawn_micros, l.status,"
        " (SELECT coalesce(sum(cost_micros), 0) FROM usage_events e WHERE e.lease_id = l.id) AS events"
        " FROM leases l WHERE l.agent_id = $1",
        agent_id,
    )
    state = LedgerState(*agent)
    # spent is the sum of distinct reported costs; each event id is stored once
    assert state.spent == events_total, (state, events_total)
    assert events == ids, (events, ids)
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
    # overdrawn: beyond the leases' grants, plus usage that arrived with no open lease at all
    assert state.overdrawn == sum(lease["overdrawn_micros"] for lease in leases) + leaseless, state
    await assert_rollups_match(pool, agent_id)
    return state


def _bucket(moment: datetime, grain: str) -> datetime:
    """The start of the rollup bucket holding ``moment``, worked out here independently."""
    moment = moment.astimezone(UTC)
    if grain == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "day":
        return day
    if grain == "month":
        return day.replace(day=1)
    return day.replace(day=1 if day.day <= 10 else 11 if day.day <= 20 else 21)  # a dekad


def _figures(events: list[asyncpg.Record]) -> dict[str, Any]:
    costs = [e["cost_micros"] for e in events]
    latencies = [e["latency_ms"] for e in events if e["latency_ms"] is not None]
    return {
        "requests": len(events),
        "failed": sum(e["status"] == "failed" for e in events),
        "input_tokens": sum(e["input_tokens"] for e in events),
        "output_tokens": sum(e["output_tokens"] for e in events),
        "cost_micros": sum(costs),
        "cost_min": min(costs),
        "cost_max": max(costs),
        "latency_count": len(latencies),
        "latency_sum": sum(latencies),
        "latency_min": min(latencies, default=None),
        "latency_max": max(latencies, default=None),
        "last_at": max(e["occurred_at"] for e in events),
        "bins": dict(Counter(e["bin"] for e in events)),
    }


async def assert_rollups_match(pool: asyncpg.Pool, agent_id: str | None = None) -> None:
    """The rollups of one agent (or, with None, the all-agent rows) equal its events, at every grain."""
    events = await pool.fetch(
        "SELECT *, usage_cost_bin(cost_micros) AS bin FROM usage_events"
        " WHERE $1::text IS NULL OR agent_id = $1",
        agent_id,
    )
    for grain in ("hour", "day", "dekad", "month"):
        groups: dict[tuple[Any, ...], list[asyncpg.Record]] = {}
        for event in events:
            key = (_bucket(event["occurred_at"], grain), event["provider"].lower(), event["model"])
            groups.setdefault(key, []).append(event)
        expected = {key: _figures(group) for key, group in groups.items()}
        rows = await pool.fetch(
            "SELECT bucket, provider, model, sum(requests) AS requests, sum(failed) AS failed,"
            " sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,"
            " sum(cost_micros) AS cost_micros, min(cost_min) AS cost_min, max(cost_max) AS cost_max,"
            " sum(latency_count) AS latency_count, sum(latency_sum) AS latency_sum,"
            " min(latency_min) AS latency_min, max(latency_max) AS latency_max, max(last_at) AS last_at,"
            " (SELECT array_agg(ARRAY[h.bin, h.n]) FROM (SELECT b AS bin, sum(n) AS n"
            "   FROM usage_rollups x, unnest(x.cost_bins, x.cost_counts) AS u (b, n)"
            "   WHERE (x.grain, x.scope, x.bucket, x.provider, x.model) = (r.grain, r.scope, r.bucket,"
            "   r.provider, r.model) GROUP BY b) h) AS bins"
            " FROM usage_rollups r WHERE grain = $1 AND scope = coalesce($2, '')"
            " GROUP BY grain, scope, bucket, provider, model",
            grain,
            agent_id,
        )
        got = {
            (row["bucket"], row["provider"], row["model"]): {
                **{k: v for k, v in dict(row).items() if k not in ("bucket", "provider", "model", "bins")},
                "bins": {int(b): int(n) for b, n in row["bins"]},
            }
            for row in rows
        }
        assert got == expected, (grain, agent_id)
