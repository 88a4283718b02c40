"""Analytics endpoints: ingestion (IC token) and queries (user token or API token; rate limit class
``analytics``). Every query takes a period (or from/to) and the filters agent_id, project_id and
provider_id; see :mod:`control_plane.analytics.params`.
"""

import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, TypeVar

import asyncpg
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import RawBody

from control_plane.analytics import params, periods, repository, service
from control_plane.analytics.periods import Period
from control_plane.analytics.repository import Order, UsageRow
from control_plane.analytics.schemas import (
    AgentBudgetStatus,
    AgentSpending,
    AgentTokens,
    AveragePerRequest,
    BudgetStatusPage,
    ModelUsage,
    PeriodInfo,
    PeriodPage,
    Point,
    ProviderSpending,
    RequestUsage,
    RiskCounts,
    SpendingTotal,
    Timeseries,
    UsageEvent,
)
from control_plane.auth.principals import UserPrincipal, current_agent
from control_plane.lib import openapi, ratelimit
from control_plane.lib.db import Conn
from control_plane.lib.errors import validation_error
from control_plane.lib.listing import sort_schema
from control_plane.lib.pagination import PageRequest, page_of, page_request
from control_plane.settings import Settings
from iron.analytics import (
    EVENT_TYPE_OF,
    STATUS_OF,
    AnalyticsBatch,
    AnalyticsEvent,
    EventOutcome,
    IngestResult,
)
from iron.money import usd
from iron.timefmt import iso, utcnow
from iron.validation import decode, has_field

T = TypeVar("T")
_BASE: Final = "/api/v1/analytics"
# An agent, project or provider named in a filter may not exist (or not be the caller's): 404.
_DOC: Final = openapi.doc(query=params.QUERY, errors=(404,))


def _row(event: AnalyticsEvent) -> UsageRow:
    return UsageRow(
        event_id=event.event_id,
        cost=event.cost,
        input_tokens=event.input_tokens,
        output_tokens=event.output_tokens,
        model=event.model,
        provider=event.provider,
        status=STATUS_OF[event.event_type],
        latency_ms=event.latency_ms,
        occurred_at=event.occurred_at,
        error_code=event.error_code,
        error_message=event.error_message,
    )


@post(
    f"{_BASE}/events",
    status_code=202,
    opt=openapi.doc(responses={200: IngestResult, 202: IngestResult}, errors=(404,)),
)
async def ingest_events(
    request: Request[Any, Any, Any], body: RawBody, pool: NamedDependency[asyncpg.Pool]
) -> Response[IngestResult]:
    """One event, or ``{"events": [...]}`` (up to 1,000). Idempotent by ``event_id`` per agent, across
    this endpoint and the budget protocol's reports: 202 when any event was new, 200 when none."""
    agent = await current_agent(request, body)
    if has_field(body, "events"):
        events = decode(body, AnalyticsBatch).events
    else:
        events = [decode(body, AnalyticsEvent)]
    accepted = await service.ingest(pool, agent.agent_id, [_row(event) for event in events])
    if accepted.events:
        await service.events_accepted(request.app.state, accepted)
    flags = service.outcomes([event.event_id for event in events], accepted)
    result = IngestResult(
        accepted=sum(flags),
        duplicates=len(flags) - sum(flags),
        events=[
            EventOutcome(event_id=event.event_id, status="accepted" if new else "duplicate")
            for event, new in zip(events, flags, strict=True)
        ],
    )
    return Response(result, status_code=202 if accepted.events else 200)


# --- queries ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sorting:
    sortable: Mapping[str, str]
    default: str
    tiebreak: str

    @property
    def doc(self) -> dict[str, Any]:
        """For a paged query's ``opt``: paging, the sort values it accepts, and the filters."""
        page_query = {**openapi.PAGE_QUERY, "sort": sort_schema(self.sortable)}
        return openapi.doc(query={**page_query, **params.QUERY}, errors=(404,))


@dataclass(frozen=True, slots=True)
class _Query:
    """One query's connection (a read-only snapshot), scope and period, and page if it has one."""

    conn: Conn
    view: service.View
    page: PageRequest | None

    @property
    def order(self) -> Order:
        assert self.page is not None  # a paged query
        return Order(self.page.order_by, self.page.per_page, self.page.offset)


@contextlib.asynccontextmanager
async def _query(
    request: Request[Any, Any, Any],
    user: UserPrincipal,
    pool: asyncpg.Pool,
    errors: dict[str, str] | None = None,
    sorting: _Sorting | None = None,
    raw_only: bool = False,
) -> AsyncIterator[_Query]:
    """Every bad parameter (with the caller's ``errors``) in one 400, then the query's scope and
    period resolved in its snapshot; with ``sorting``, a page of groups; ``raw_only``: a query of
    the raw events alone (see :func:`service.view`)."""
    errors = {} if errors is None else errors
    now = utcnow()
    settings: Settings = request.app.state.settings
    horizon = periods.raw_horizon(now, settings.usage_events_retention_months)
    asked = params.read(request.query_params, now, errors)
    page = None
    if sorting is not None:
        page = page_request(request.query_params, sorting.sortable, sorting.default, errors, sorting.tiebreak)
    if errors:
        raise validation_error(errors, "Invalid analytics parameters")
    async with repository.reading(pool) as conn:
        yield _Query(conn, await service.view(conn, user, asked, now, horizon, raw_only), page)


def _period(period: Period) -> PeriodInfo:
    return PeriodInfo(name=period.name, from_=iso(period.start), to=iso(period.end))


def _page(data: list[T], query: _Query, total: int) -> PeriodPage[T]:
    assert query.page is not None  # a paged query
    pagination = page_of(data, query.page, total).pagination
    return PeriodPage(data=data, pagination=pagination, period=_period(query.view.period))


def _share(part: int, whole: int | None) -> float:
    return round(100 * part / whole, 2) if whole else 0.0


async def _groups(
    query: _Query, fetch: Callable[[Order], Awaitable[list[asyncpg.Record]]]
) -> tuple[list[asyncpg.Record], asyncpg.Record | None]:
    """A page of groups, and a row with the counts over all of them (``total_rows``, ...): the
    page's first, or past the last page (no rows) the list's first, so those counts stay true."""
    rows = await fetch(query.order)
    if rows or query.order.offset == 0:
        return rows, rows[0] if rows else None
    first = await fetch(dataclasses.replace(query.order, limit=1, offset=0))
    return rows, first[0] if first else None


def _total_rows(totals: asyncpg.Record | None) -> int:
    return int(totals["total_rows"]) if totals else 0


def _money(micros: int) -> dict[str, Any]:
    return {"cost_usd": usd(micros), "cost_micros": micros}


def _spending(row: asyncpg.Record) -> dict[str, Any]:
    """A group's calls and cost, and its share of every group's cost."""
    share = _share(row["cost_micros"], row["all_cost_micros"])
    return {"requests": row["requests"], **_money(row["cost_micros"]), "share_percent": share}


@get(f"{_BASE}/spending/total", opt=_DOC)
async def spending_total(
    request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> SpendingTotal:
    async with _query(request, user, pool) as query:
        (row,) = await repository.figures(query.conn, query.view.window, ("requests", "cost_micros"))
    return SpendingTotal(
        period=_period(query.view.period), requests=row["requests"], **_money(row["cost_micros"])
    )


_BY_AGENT: Final = _Sorting(
    {"cost": "g.cost_micros", "requests": "g.requests", "agent_name": "g.agent_name"}, "-cost", "g.agent_id"
)


@get(f"{_BASE}/spending/by-agent", opt=_BY_AGENT.doc)
async def spending_by_agent(
    request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> PeriodPage[AgentSpending]:
    """Agents with usage in the period, by cost; ``share_percent`` is of the period's total."""
    async with _query(request, user, pool, sorting=_BY_AGENT) as query:
        measures = ("requests", "cost_micros")
        fetch = functools.partial(repository.figures, query.conn, query.view.window, measures, ("agent_id",))
        rows, totals = await _groups(query, fetch)
    data = [
        AgentSpending(agent_id=row["agent_id"], agent_name=row["agent_name"], **_spending(row))
        for row in rows
    ]
    return _page(data, query, _total_rows(totals))


_BY_PROVIDER: Final = _Sorting(
    {"cost": "g.cost_micros", "requests": "g.requests", "provider": "g.provider"}, "-cost", "g.provider"
)


@get(f"{_BASE}/spending/by-provider", opt=_BY_PROVIDER.doc)
async def spending_by_provider(
    request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> PeriodPage[ProviderSpending]:
    """Cost per provider label reported (lower case), with the providers that label names."""
    async with _query(request, user, pool, sorting=_BY_PROVIDER) as query:
        measures = ("requests", "cost_micros")
        fetch = functools.partial(repository.figures, query.conn, query.view.window, measures, ("provider",))
        rows, totals = await _groups(query, fetch)
        ids = await repository.providers_by_label(query.conn, [row["provider"] for row in rows])
    data = [
        ProviderSpending(
            provider=row["provider"], provider_ids=ids.get(row["provider"], []), **_spending(row)
        )
        for row in rows
    ]
    return _page(data, query, _total_rows(totals))


def _per_call(micros: int | None) -> tuple[float | None, int | None]:
    return (None, None) if micros is None else (usd(micros, 6), micros)


@get(f"{_BASE}/spending/avg-per-request", opt=_DOC)
async def spending_avg_per_request(
    request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> AveragePerRequest:
    """Average, median, lowest and highest cost of one call in the period."""
    average = median = exact = None
    async with _query(request, user, pool) as query:
        measures = ("requests", "cost_micros", "cost_min", "cost_max")
        (row,) = await repository.figures(query.conn, query.view.window, measures)
        requests, cost = row["requests"], row["cost_micros"]
        if requests:
            average = service.rounded(Decimal(cost) / requests)
            median, exact = await service.median(
                query.conn,
                query.view.window,
                requests,
                row["cost_min"],
                row["cost_max"],
                exact_limit=service.EXACT_MEDIAN_LIMIT if query.view.raw_kept else 0,
            )
    (average_usd, average_micros), (median_usd, median_micros) = _per_call(average), _per_call(median)
    (min_usd, min_micros), (max_usd, max_micros) = _per_call(row["cost_min"]), _per_call(row["cost_max"])
    return AveragePerRequest(
        period=_period(query.view.period),
        requests=requests,
        cost_usd=usd(cost),
        cost_micros=cost,
        average_usd=average_usd,
        average_micros=average_micros,
        median_usd=median_usd,
        median_micros=median_micros,
        median_exact=exact,
        min_usd=min_usd,
        min_micros=min_micros,
        max_usd=max_usd,
        max_micros=max_micros,
    )


_STATUS: Final = _Sorting(repository.STATUS_SORTABLE, "-percent_used", "g.agent_id")


@get(f"{_BASE}/budget/status", opt=_STATUS.doc)
async def budget_status(
    request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> BudgetStatusPage:
    """Live agents with their budget, spend and risk band (spent / budget: low < 50 %, medium
    50-79, high 80-94, critical 95-99, exhausted 100 or more, or no budget), and their cost in
    the period; ``risk_counts`` counts every agent in scope."""
    async with _query(request, user, pool, sorting=_STATUS) as query:
        fetch = functools.partial(repository.budget_status, query.conn, query.view.window)
        rows, totals = await _groups(query, fetch)
    data = []
    for row in rows:
        budget, spent = row["budget_micros"], row["spent_micros"]
        remaining = budget - spent - row["outstanding_micros"]
        data.append(
            AgentBudgetStatus(
                agent_id=row["agent_id"],
                agent_name=row["agent_name"],
                budget_usd=usd(budget),
                budget_micros=budget,
                spent_usd=usd(spent),
                spent_micros=spent,
                remaining_usd=usd(remaining),
                remaining_micros=remaining,
                percent_used=_share(spent, budget) if budget else None,
                risk=row["risk"],
                period_cost_usd=usd(row["period_cost_micros"]),
                period_cost_micros=row["period_cost_micros"],
            )
        )
    counts = RiskCounts(**{risk: int(totals[f"risk_{risk}"]) if totals else 0 for risk in repository.RISKS})
    page = _page(data, query, _total_rows(totals))
    return BudgetStatusPage(data=data, pagination=page.pagination, period=page.period, risk_counts=counts)


@get(f"{_BASE}/usage/requests", opt=_DOC)
async def usage_requests(
    request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> RequestUsage:
    """Calls in the period; ``success_rate`` is the percent that completed."""
    async with _query(request, user, pool) as query:
        (row,) = await repository.figures(query.conn, query.view.window, ("requests", "failed"))
    requests, failed = row["requests"], row["failed"]
    return RequestUsage(
        period=_period(query.view.period),
        requests=requests,
        completed=requests - failed,
        failed=failed,
        success_rate=_share(requests - failed, requests) if requests else None,
    )


_TOKENS: Final = _Sorting(
    {
        "total_tokens": "g.total_tokens",
        "input_tokens": "g.input_tokens",
        "output_tokens": "g.output_tokens",
        "requests": "g.requests",
        "agent_name": "g.agent_name",
    },
    "-total_tokens",
    "g.agent_id",
)


@get(f"{_BASE}/usage/tokens/by-agent", opt=_TOKENS.doc)
async def usage_tokens_by_agent(
    request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> PeriodPage[AgentTokens]:
    measures = ("requests", "input_tokens", "output_tokens", "total_tokens")
    async with _query(request, user, pool, sorting=_TOKENS) as query:
        fetch = functools.partial(repository.figures, query.conn, query.view.window, measures, ("agent_id",))
        rows, totals = await _groups(query, fetch)
    data = [AgentTokens(**{key: row[key] for key in ("agent_id", "agent_name", *measures)}) for row in rows]
    return _page(data, query, _total_rows(totals))


_MODELS: Final = _Sorting(
    {"requests": "g.requests", "cost": "g.cost_micros", "model": "g.model", "provider": "g.provider"},
    "-requests",
    "(g.provider, g.model)",
)
_MODEL_MEASURES: Final = (
    "requests",
    "failed",
    "input_tokens",
    "output_tokens",
    "cost_micros",
    "latency_count",
    "latency_sum",
)


@get(f"{_BASE}/usage/models", opt=_MODELS.doc)
async def usage_models(
    request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> PeriodPage[ModelUsage]:
    """Calls per provider label and model."""
    async with _query(request, user, pool, sorting=_MODELS) as query:
        by = ("provider", "model")
        rows, totals = await _groups(
            query, functools.partial(repository.figures, query.conn, query.view.window, _MODEL_MEASURES, by)
        )
    data = [
        ModelUsage(
            provider=row["provider"],
            model=row["model"],
            requests=row["requests"],
            failed=row["failed"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            **_money(row["cost_micros"]),
            average_latency_ms=_average(row["latency_sum"], row["latency_count"]),
        )
        for row in rows
    ]
    return _page(data, query, _total_rows(totals))


def _average(total: int, count: int) -> float | None:
    return round(total / count, 1) if count else None


_EVENTS: Final = _Sorting(repository.EVENT_SORTABLE, "-timestamp", repository.EVENT_TIEBREAK)


# The path is also ingestion's, which the limiter exempts (IC token): this method is a query.
@get(f"{_BASE}/events", opt={**_EVENTS.doc, ratelimit.OPT_KEY: ratelimit.ANALYTICS})
async def list_events(
    request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> PeriodPage[UsageEvent]:
    """The calls of the period, newest first (``sort=timestamp`` for oldest first)."""
    async with _query(request, user, pool, sorting=_EVENTS, raw_only=True) as query:
        (count,) = await repository.figures(query.conn, query.view.window, ("requests",))
        rows = await repository.events_page(query.conn, query.view.window, query.order)
    data = [
        UsageEvent(
            event_id=row["event_id"],
            agent_id=row["agent_id"],
            event_type=EVENT_TYPE_OF[row["status"]],
            timestamp=iso(row["occurred_at"]),
            received_at=iso(row["received_at"]),
            model=row["model"],
            provider=row["provider"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cost_usd=usd(row["cost_micros"], 6),
            cost_micros=row["cost_micros"],
            latency_ms=row["latency_ms"],
            error_code=row["error_code"],
            error_message=row["error_message"],
            lease_id=row["lease_id"],
            source=row["source"],
        )
        for row in rows
    ]
    return _page(data, query, count["requests"])


@get(f"{_BASE}/spending/timeseries", opt=openapi.doc(query=params.BUCKET_QUERY, errors=(404,)))
async def spending_timeseries(
    request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> Timeseries:
    """Cost and calls per hour or day (``bucket``, default day) of the period, zeros included; at
    most 93 days of hours or 10 years of days."""
    errors: dict[str, str] = {}
    grain = params.bucket(request.query_params, errors)
    async with _query(request, user, pool, errors) as query:
        period = query.view.period
        starts = periods.buckets(period.start, period.end, grain)
        if len(starts) > (most := params.MAX_POINTS[grain]):
            raise validation_error({"bucket": f"The period has more than {most} {grain}s"})
        measures = ("requests", "cost_micros")
        rows = await repository.figures(query.conn, query.view.window, measures, (grain,), coarsest=grain)
    found = {row[grain]: row for row in rows}
    points = []
    for start in starts:
        row = found.get(start)
        cost = row["cost_micros"] if row else 0
        requests = row["requests"] if row else 0
        points.append(Point(start=iso(start), requests=requests, **_money(cost)))
    return Timeseries(period=_period(period), bucket=grain, points=points)


handlers = [
    ingest_events,
    spending_total,
    spending_by_agent,
    spending_by_provider,
    spending_avg_per_request,
    spending_timeseries,
    budget_status,
    usage_requests,
    usage_tokens_by_agent,
    usage_models,
    list_events,
]
