"""Wire types of the analytics queries. Money is given twice: ``*_usd`` (totals to 2 decimals,
per-call figures to 6) and exact ``*_micros``. Times are UTC."""

from typing import Generic, Literal, TypeVar

import msgspec

from control_plane.analytics.periods import Bucket
from control_plane.lib.pagination import Page
from iron.analytics import EventType

T = TypeVar("T")
Risk = Literal["low", "medium", "high", "critical", "exhausted"]


class PeriodInfo(msgspec.Struct, kw_only=True):
    """The range ``[from, to)`` a figure covers; ``name`` is the period asked for, or ``custom``."""

    name: str
    from_: str = msgspec.field(name="from")
    to: str


class PeriodPage(Page[T], Generic[T], kw_only=True):
    period: PeriodInfo


class SpendingTotal(msgspec.Struct, kw_only=True):
    period: PeriodInfo
    requests: int
    cost_usd: float
    cost_micros: int


class AgentSpending(msgspec.Struct, kw_only=True):
    agent_id: str
    agent_name: str
    requests: int
    cost_usd: float
    cost_micros: int
    share_percent: float  # of the cost of every group, not only this page's


class ProviderSpending(msgspec.Struct, kw_only=True):
    provider: str  # the label calls were reported under, in lower case
    provider_ids: list[str]  # the providers whose type or name the label is
    requests: int
    cost_usd: float
    cost_micros: int
    share_percent: float


class AveragePerRequest(msgspec.Struct, kw_only=True):
    """Per call, over every call (failed ones too: they cost what they cost, usually 0). The median
    is exact (``median_exact``) for up to 5,000 calls, else from cost histograms and within 4.5 %."""

    period: PeriodInfo
    requests: int
    cost_usd: float
    cost_micros: int
    average_usd: float | None
    average_micros: int | None
    median_usd: float | None
    median_micros: int | None
    median_exact: bool | None
    min_usd: float | None
    min_micros: int | None
    max_usd: float | None
    max_micros: int | None


class AgentBudgetStatus(msgspec.Struct, kw_only=True):
    """An agent's budget now (not of the period), and what it spent in the period."""

    agent_id: str
    agent_name: str
    budget_usd: float
    budget_micros: int
    spent_usd: float
    spent_micros: int
    remaining_usd: float
    remaining_micros: int
    percent_used: float | None  # None without a budget
    risk: Risk
    period_cost_usd: float
    period_cost_micros: int


class RiskCounts(msgspec.Struct, kw_only=True):
    low: int
    medium: int
    high: int
    critical: int
    exhausted: int


class BudgetStatusPage(PeriodPage[AgentBudgetStatus], kw_only=True):
    risk_counts: RiskCounts  # over every agent in scope, not only this page's


class RequestUsage(msgspec.Struct, kw_only=True):
    period: PeriodInfo
    requests: int
    completed: int
    failed: int
    success_rate: float | None  # percent of completed calls; None without calls


class AgentTokens(msgspec.Struct, kw_only=True):
    agent_id: str
    agent_name: str
    requests: int
    input_tokens: int
    output_tokens: int
    total_tokens: int


class ModelUsage(msgspec.Struct, kw_only=True):
    provider: str
    model: str
    requests: int
    failed: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cost_micros: int
    average_latency_ms: float | None  # over the calls that reported a latency


class UsageEvent(msgspec.Struct, kw_only=True):
    event_id: str
    agent_id: str
    event_type: EventType
    timestamp: str
    received_at: str
    model: str
    provider: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cost_micros: int
    latency_ms: int | None
    error_code: str | None
    error_message: str | None
    lease_id: str | None  # the lease it was charged to; None: none was open (an overdraw)
    source: Literal["budget", "analytics"]  # the path it first arrived by


class Point(msgspec.Struct, kw_only=True):
    start: str
    cost_usd: float
    cost_micros: int
    requests: int


class Timeseries(msgspec.Struct, kw_only=True):
    """Every bucket overlapping the period, empty ones as zeros."""

    period: PeriodInfo
    bucket: Bucket
    points: list[Point]
