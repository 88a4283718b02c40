"""SQL of the usage store: recording events (both ingestion paths) and every analytics query.

The store (migration 0005): ``usage_events``, range-partitioned by month on ``occurred_at``;
``usage_event_ids``, whose primary key ``(agent_id, event_id)`` decides whether an event is new
(a unique constraint on the partitioned table would have to include the timestamp, and one call
reported twice may carry two timestamps); ``usage_rollups``, kept by a trigger on every insert.
A query over ``[from, to)`` reads whole months, dekads, days and hours from the rollups and only
the sub-hour edges from the events (:func:`control_plane.analytics.periods.split`).
"""

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import asyncpg

from control_plane.analytics.periods import Grain, split
from control_plane.lib.db import Conn, Executor


class UsageRow(NamedTuple):
    """One LLM call, as either ingestion path hands it to the store (a tuple: batches are large)."""

    event_id: str
    cost: int
    input_tokens: int
    output_tokens: int
    model: str
    provider: str
    status: str  # completed | failed
    latency_ms: int | None
    occurred_at: datetime  # in UTC
    error_code: str | None = None
    error_message: str | None = None


# --- recording -------------------------------------------------------------------------------

# Months whose partition this process made sure of, per pool (i.e. per database). The entry
# holds its pool, so the id stays that pool's. A miss only costs a call; a month never made
# sure of still works: its events land in the default partition.
_ready_months: dict[int, tuple[asyncpg.Pool, set[datetime]]] = {}


async def ensure_partitions(pool: asyncpg.Pool, events: Iterable[UsageRow]) -> None:
    """Create the partitions of the events' months (outside any ledger transaction: DDL waits for
    inserts in flight and must not hold an agent's lock meanwhile). Once per month per process."""
    ready = _ready_months.setdefault(id(pool), (pool, set()))[1]
    seen = {(event.occurred_at.year, event.occurred_at.month) for event in events}
    months = {datetime(year, month, 1, tzinfo=UTC) for year, month in seen} - ready
    if months:
        await pool.execute("SELECT usage_events_add_partition(m) FROM unnest($1::timestamptz[]) AS m", months)
        ready |= months


_INSERT: Final = """
WITH input AS (
    SELECT * FROM unnest($4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::text[], $9::text[],
        $10::text[], $11::int[], $12::timestamptz[], $13::text[], $14::text[])
        AS e (event_id, cost, input_tokens, output_tokens, model, provider, status, latency_ms,
            occurred_at, error_code, error_message)  -- UsageRow's fields, in order
), new AS (
    INSERT INTO usage_event_ids (agent_id, event_id) SELECT $1, event_id FROM input
    ON CONFLICT DO NOTHING RETURNING event_id
), stored AS (
    INSERT INTO usage_events (agent_id, event_id, lease_id, cost_micros, input_tokens, output_tokens,
        model, provider, status, latency_ms, error_code, error_message, source, occurred_at)
    SELECT $1, i.event_id, $2, i.cost, i.input_tokens, i.output_tokens, i.model, i.provider, i.status,
        i.latency_ms, i.error_code, i.error_message, $3, i.occurred_at
    FROM input i JOIN new USING (event_id)
)
SELECT event_id FROM new
"""


async def insert_new(
    conn: Conn, agent_id: str, lease_id: str | None, source: str, events: Sequence[UsageRow]
) -> list[UsageRow]:
    """Record the events the agent has not reported before; return them (the first of repeated
    ids within ``events``). One statement, so the rollup trigger runs once per batch.

    Call under the agent's row lock: an event id is then decided by one transaction at a time.
    """
    unique = list({event.event_id: event for event in reversed(events)}.values())[::-1]
    columns = zip(*unique, strict=True) if unique else [()] * len(UsageRow._fields)
    rows = await conn.fetch(_INSERT, agent_id, lease_id, source, *columns)
    new = {row["event_id"] for row in rows}
    return [event for event in unique if event.event_id in new]


# --- retention -------------------------------------------------------------------------------

# Monthly partitions are named by usage_events_add_partition (migration 0005), the only place
# that makes them: usage_events_pYYYYMM.
_MONTHS_BEFORE: Final = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'usage_events'::regclass AND c.relname ~ '^usage_events_p[0-9]{6}$'
  AND make_timestamptz(substr(c.relname, 15, 4)::int, substr(c.relname, 19, 2)::int, 1, 0, 0, 0, 'UTC')
      + INTERVAL '1 month' <= $1
ORDER BY c.relname
"""


async def drop_months_before(pool: asyncpg.Pool, horizon: datetime, lock_timeout_ms: int = 2000) -> int:
    """Drop the monthly partitions wholly before ``horizon``; how many went.

    Dropping one locks the whole event table for a moment; a partition whose lock does not come
    within ``lock_timeout_ms`` (a long query is reading it) is left for the next sweep rather
    than queueing every insert behind it. Rollups and event ids are not touched: totals stay,
    and a late replay of a dropped event is still a duplicate.
    """
    dropped = 0
    for name in [row["relname"] for row in await pool.fetch(_MONTHS_BEFORE, horizon)]:
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
                # as usage_events_add_partition does: one replica makes or drops partitions at once
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('usage_events_add_partition'))")
                if await conn.fetchval("SELECT to_regclass($1)", name) is not None:
                    await conn.execute(f'DROP TABLE "{name}"')  # the name matched _MONTHS_BEFORE
                    dropped += 1
        except asyncpg.LockNotAvailableError:
            continue
    return dropped


async def delete_default_before(pool: asyncpg.Pool, horizon: datetime, batch: int) -> int:
    """Delete up to ``batch`` events before ``horizon`` from the default partition (far-off
    timestamps, months never partitioned); how many went."""
    status: str = await pool.execute(
        "DELETE FROM usage_events_default WHERE ctid = ANY(ARRAY("
        " SELECT ctid FROM usage_events_default WHERE occurred_at < $1 LIMIT $2))",
        horizon,
        batch,
    )
    return int(status.split()[-1])


# --- whose usage -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def reading(pool: asyncpg.Pool) -> AsyncIterator[Conn]:
    """A connection for one response's queries: one read-only snapshot, so its figures agree with
    each other. Each statement is planned for its own time range (a generic plan, made once for
    any range, reads far too much for some); no parallel workers and no JIT, which cost more than
    such short queries take."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(
            "SET LOCAL plan_cache_mode = force_custom_plan;"
            " SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off"
        )
        yield conn


@dataclass(frozen=True, slots=True)
class Scope:
    """The usage a query covers: every agent's (``agents`` None) or the listed agents', of every
    provider (``labels`` None) or of the calls labelled with one of ``labels`` (lower case)."""

    agents: list[str] | None = None
    labels: list[str] | None = None


async def agent_ids(
    conn: Executor, owner_id: str | None, project_id: str | None, agent_id: str | None
) -> list[str]:
    """Agents (deleted ones too: their usage is history) matching every given condition."""
    rows = await conn.fetch(
        "SELECT id FROM agents WHERE ($1::text IS NULL OR owner_id = $1)"
        " AND ($2::text IS NULL OR project_id = $2) AND ($3::text IS NULL OR id = $3)",
        owner_id,
        project_id,
        agent_id,
    )
    return [row["id"] for row in rows]


async def agent_owner(conn: Executor, agent_id: str) -> str | None:
    owner: str | None = await conn.fetchval("SELECT owner_id FROM agents WHERE id = $1", agent_id)
    return owner


async def provider_labels(conn: Executor, provider_id: str) -> list[str] | None:
    """The labels a provider's calls carry: its type and its name, in lower case (None: no such provider)."""
    row = await conn.fetchrow(
        "SELECT lower(type) AS type, lower(name) AS name FROM providers WHERE id = $1", provider_id
    )
    return sorted({row["type"], row["name"]}) if row else None


async def providers_by_label(conn: Executor, labels: list[str]) -> dict[str, list[str]]:
    """Label -> ids of the providers whose type or name it is."""
    rows = await conn.fetch(
        "SELECT l.label, p.id FROM unnest($1::text[]) AS l (label)"
        " JOIN providers p ON lower(p.type) = l.label OR lower(p.name) = l.label ORDER BY p.id",
        labels,
    )
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["label"], []).append(row["id"])
    return found


# --- the rollup/raw union --------------------------------------------------------------------

#: Per-row figures: (expression on a rollup row ``r``, expression on an event ``e``).
_COLUMNS: Final[dict[str, tuple[str, str]]] = {
    "agent_id": ("r.scope", "e.agent_id"),
    "provider": ("r.provider", "lower(e.provider)"),
    "model": ("r.model", "e.model"),
    "requests": ("r.requests", "1"),
    "failed": ("r.failed", "(e.status = 'failed')::int"),
    "input_tokens": ("r.input_tokens", "e.input_tokens"),
    "output_tokens": ("r.output_tokens", "e.output_tokens"),
    "cost_micros": ("r.cost_micros", "e.cost_micros"),
    "cost_min": ("r.cost_min", "e.cost_micros"),
    "cost_max": ("r.cost_max", "e.cost_micros"),
    "latency_count": ("r.latency_count", "(e.latency_ms IS NOT NULL)::int"),
    "latency_sum": ("r.latency_sum", "coalesce(e.latency_ms, 0)"),
    "last_at": ("r.last_at", "e.occurred_at"),
    "cost_bins": ("r.cost_bins", "ARRAY[usage_cost_bin(e.cost_micros)]"),
    "cost_counts": ("r.cost_counts", "ARRAY[1::bigint]"),
    "hour": ("date_trunc('hour', r.bucket, 'UTC')", "date_trunc('hour', e.occurred_at, 'UTC')"),
    "day": ("date_trunc('day', r.bucket, 'UTC')", "date_trunc('day', e.occurred_at, 'UTC')"),
}

#: Aggregates of the union's rows, by output name.
MEASURES: Final[dict[str, str]] = {
    "requests": "coalesce(sum(p.requests), 0)::bigint",
    "failed": "coalesce(sum(p.failed), 0)::bigint",
    "input_tokens": "coalesce(sum(p.input_tokens), 0)::bigint",
    "output_tokens": "coalesce(sum(p.output_tokens), 0)::bigint",
    "total_tokens": "coalesce(sum(p.input_tokens + p.output_tokens), 0)::bigint",
    "cost_micros": "coalesce(sum(p.cost_micros), 0)::bigint",
    "cost_min": "min(p.cost_min)",
    "cost_max": "max(p.cost_max)",
    "latency_count": "coalesce(sum(p.latency_count), 0)::bigint",
    "latency_sum": "coalesce(sum(p.latency_sum), 0)::bigint",
    "last_at": "max(p.last_at)",
}
#: The rollup/raw columns each measure needs.
_NEEDS: Final[dict[str, tuple[str, ...]]] = {"total_tokens": ("input_tokens", "output_tokens")}


@dataclass
class _Args:
    """Bind parameters of a statement under construction."""

    values: list[Any] = field(default_factory=list)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _one_of(column: str, agents: list[str], args: _Args) -> str:
    """``column`` is one of ``agents``: an equality for one, so an index returns rows in order."""
    if len(agents) == 1:
        return f"{column} = {args.add(agents[0])}"
    return f"{column} = ANY({args.add(agents)}::text[])"


def _union(
    columns: Sequence[str],
    scope: Scope,
    start: datetime,
    end: datetime,
    coarsest: Grain,
    per_agent: bool,
    args: _Args,
) -> str:
    """A subquery of ``columns`` over the usage in ``scope`` and ``[start, end)``: rollup rows of
    whole hours, days and months (up to ``coarsest``) and events for the rest.

    ``per_agent``: read the agents' own rollup rows (to group by agent), not the all-agent ones.
    Its shape is fixed (two ranges per source, empty ones included) so statements are reused.
    """
    labels = args.add(scope.labels) if scope.labels is not None else None
    if scope.agents is not None:
        rollup_scope = _one_of("r.scope", scope.agents, args)
        raw_scope = _one_of("e.agent_id", scope.agents, args)
    else:
        rollup_scope, raw_scope = ("r.scope <> ''" if per_agent else "r.scope = ''"), "TRUE"
    rollup_labels = f"r.provider = ANY({labels}::text[])" if labels else "TRUE"
    raw_labels = f"lower(e.provider) = ANY({labels}::text[])" if labels else "TRUE"
    branches = []
    for source, ranges in split(start, end, coarsest).items():
        for lo, hi in (ranges + [(start, start)] * 2)[:2]:
            bounds = (args.add(lo), args.add(hi))
            if source == "raw":
                select = ", ".join(f"{_COLUMNS[c][1]} AS {c}" for c in columns)
                branches.append(
                    f"SELECT {select} FROM usage_events e WHERE {raw_scope} AND {raw_labels}"
                    f" AND e.occurred_at >= {bounds[0]} AND e.occurred_at < {bounds[1]}"
                )
            else:
                select = ", ".join(f"{_COLUMNS[c][0]} AS {c}" for c in columns)
                branches.append(
                    f"SELECT {select} FROM usage_rollups r WHERE r.grain = '{source}' AND {rollup_scope}"
                    f" AND {rollup_labels} AND r.bucket >= {bounds[0]} AND r.bucket < {bounds[1]}"
                )
    return " UNION ALL ".join(branches)


def _columns_for(measures: Iterable[str], by: Iterable[str]) -> list[str]:
    needed = list(by)
    for measure in measures:
        for column in _NEEDS.get(measure, (measure,)):
            if column not in needed:
                needed.append(column)
    return needed


@dataclass(frozen=True, slots=True)
class Window:
    """What a query covers: whose usage, over ``[start, end)``."""

    scope: Scope
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Order:
    """A page of grouped rows: ``order_by`` is a trusted SQL fragment over the output names."""

    order_by: str
    limit: int
    offset: int


async def figures(
    conn: Executor,
    window: Window,
    measures: Sequence[str],
    by: Sequence[str] = (),
    order: Order | None = None,
    coarsest: Grain = "month",
) -> list[asyncpg.Record]:
    """``measures`` of the window's usage, grouped ``by`` (``agent_id`` adds ``agent_name``);
    with ``order``, one page of the groups and the number of groups as ``total_rows``."""
    args = _Args()
    union = _union(
        _columns_for(measures, by), window.scope, window.start, window.end, coarsest, "agent_id" in by, args
    )
    keys = ", ".join(f"p.{column}" for column in by)
    select = ", ".join([*(f"p.{column}" for column in by), *(f"{MEASURES[m]} AS {m}" for m in measures)])
    sql = f"SELECT {select} FROM ({union}) p" + (f" GROUP BY {keys}" if by else "")
    if "agent_id" in by:
        sql = f"SELECT g.*, a.name AS agent_name FROM ({sql}) g JOIN agents a ON a.id = g.agent_id"
    if order is not None:
        totals = "count(*) OVER () AS total_rows"
        if "cost_micros" in measures:
            totals += ", sum(g.cost_micros) OVER ()::bigint AS all_cost_micros"
        sql = (
            f"SELECT * FROM (SELECT g.*, {totals} FROM ({sql}) g) g ORDER BY {order.order_by}"
            f" LIMIT {args.add(order.limit)} OFFSET {args.add(order.offset)}"
        )
    return await conn.fetch(sql, *args.values)


async def histogram(conn: Executor, window: Window) -> list[tuple[int, int]]:
    """(bin, count) of the window's costs, bins ascending (see ``usage_cost_bin``)."""
    args = _Args()
    union = _union(("cost_bins", "cost_counts"), window.scope, window.start, window.end, "month", False, args)
    rows = await conn.fetch(
        f"SELECT h.bin, sum(h.n)::bigint AS n FROM ({union}) p,"
        " unnest(p.cost_bins, p.cost_counts) AS h (bin, n) GROUP BY h.bin ORDER BY h.bin",
        *args.values,
    )
    return [(row["bin"], row["n"]) for row in rows]


def _raw_filter(window: Window, args: _Args) -> str:
    conditions = [f"e.occurred_at >= {args.add(window.start)}", f"e.occurred_at < {args.add(window.end)}"]
    if window.scope.agents is not None:
        conditions.append(_one_of("e.agent_id", window.scope.agents, args))
    if window.scope.labels is not None:
        conditions.append(f"lower(e.provider) = ANY({args.add(window.scope.labels)}::text[])")
    return " AND ".join(conditions)


async def exact_median(conn: Executor, window: Window) -> float | None:
    """The median cost of the window's events, from the events themselves (for small windows)."""
    args = _Args()
    where = _raw_filter(window, args)
    median: float | None = await conn.fetchval(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY e.cost_micros)"
        f" FROM usage_events e WHERE {where}",
        *args.values,
    )
    return median


async def data_bounds(conn: Executor, scope: Scope) -> tuple[datetime | None, datetime | None]:
    """The first month with usage in ``scope`` and the last event's time."""
    args = _Args()
    conditions = ["r.grain = 'month'"]
    conditions.append(_one_of("r.scope", scope.agents, args) if scope.agents is not None else "r.scope = ''")
    if scope.labels is not None:
        conditions.append(f"r.provider = ANY({args.add(scope.labels)}::text[])")
    row = await conn.fetchrow(
        "SELECT min(r.bucket) AS first, max(r.last_at) AS last FROM usage_rollups r"
        f" WHERE {' AND '.join(conditions)}",
        *args.values,
    )
    assert row is not None  # an aggregate always has its row
    return row["first"], row["last"]


EVENT_SORTABLE: Final = {"timestamp": "e.occurred_at"}
EVENT_TIEBREAK: Final = "(e.agent_id, e.event_id)"


async def events_page(conn: Executor, window: Window, order: Order) -> list[asyncpg.Record]:
    """One page of the window's events (the total comes from the rollups: :func:`figures`)."""
    args = _Args()
    where = _raw_filter(window, args)
    return await conn.fetch(
        "SELECT e.event_id, e.agent_id, e.lease_id, e.cost_micros, e.input_tokens, e.output_tokens, e.model,"
        " e.provider, e.status, e.latency_ms, e.error_code, e.error_message, e.source, e.occurred_at,"
        f" e.received_at FROM usage_events e WHERE {where} ORDER BY {order.order_by}"
        f" LIMIT {args.add(order.limit)} OFFSET {args.add(order.offset)}",
        *args.values,
    )


#: Risk bands of spent / budget; an agent without budget has nothing left: exhausted.
_RISK: Final = (
    "CASE WHEN a.spent_micros >= a.budget_micros THEN 'exhausted'"
    " WHEN a.spent_micros * 100 >= a.budget_micros * 95 THEN 'critical'"
    " WHEN a.spent_micros * 100 >= a.budget_micros * 80 THEN 'high'"
    " WHEN a.spent_micros * 100 >= a.budget_micros * 50 THEN 'medium' ELSE 'low' END"
)
RISKS: Final = ("low", "medium", "high", "critical", "exhausted")

STATUS_SORTABLE: Final = {
    "percent_used": "g.percent_sort",
    "spent": "g.spent_micros",
    "budget": "g.budget_micros",
    "period_cost": "g.period_cost_micros",
    "agent_name": "g.agent_name",
}


async def budget_status(conn: Executor, window: Window, order: Order) -> list[asyncpg.Record]:
    """Live agents in scope with their ledger, risk band, and cost in the window; one page, with
    ``total_rows`` and the count of every risk band over all of them (``risk_<band>``)."""
    args = _Args()
    union = _union(("agent_id", "cost_micros"), window.scope, window.start, window.end, "month", True, args)
    agents = "TRUE" if window.scope.agents is None else f"a.id = ANY({args.add(window.scope.agents)}::text[])"
    bands = ", ".join(f"count(*) FILTER (WHERE g.risk = '{risk}') OVER () AS risk_{risk}" for risk in RISKS)
    return await conn.fetch(
        f"SELECT g.*, count(*) OVER () AS total_rows, {bands} FROM ("
        " SELECT a.id AS agent_id, a.name AS agent_name, a.budget_micros, a.spent_micros,"
        " a.outstanding_micros,"
        f" coalesce(c.cost_micros, 0)::bigint AS period_cost_micros, {_RISK} AS risk,"
        " CASE WHEN a.budget_micros = 0 THEN 'Infinity'::float8"
        "  ELSE a.spent_micros * 100.0 / a.budget_micros END AS percent_sort"
        " FROM agents a LEFT JOIN ("
        f"  SELECT p.agent_id, sum(p.cost_micros) AS cost_micros FROM ({union}) p GROUP BY p.agent_id"
        f" ) c ON c.agent_id = a.id WHERE a.status <> 'deleted' AND {agents}"
        f") g ORDER BY {order.order_by} LIMIT {args.add(order.limit)} OFFSET {args.add(order.offset)}",
        *args.values,
    )
