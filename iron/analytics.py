"""Wire types of analytics ingestion (``POST /api/v1/analytics/events``), for the control plane
and any client (SDK, sidecar, CLI) that reports LLM calls as analytics events.

An event is the same LLM call a sidecar may also report through the budget protocol: its
``event_id`` is the protocol's ``request_id``, so the call is counted once whichever way, or
both ways, it arrives.
"""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import msgspec

from iron.money import charge_micros
from iron.protocol import CallCostUsd, Label, LatencyMs, TokenCount, UsageStatus
from iron.timefmt import as_utc

EventType = Literal["llm_request_completed", "llm_request_failed"]
STATUS_OF: dict[str, UsageStatus] = {"llm_request_completed": "completed", "llm_request_failed": "failed"}
EVENT_TYPE_OF: dict[str, EventType] = {"completed": "llm_request_completed", "failed": "llm_request_failed"}
MAX_BATCH = 1000

#: The read endpoints under ``/api/v1/analytics/`` (``GET``; ``events`` is also the ``POST`` of ingestion).
QUERIES = (
    "spending/total",
    "spending/by-agent",
    "spending/by-provider",
    "spending/avg-per-request",
    "spending/timeseries",
    "budget/status",
    "usage/requests",
    "usage/tokens/by-agent",
    "usage/models",
    "events",
)

# Up to 9999-12-31T23:59:59.999Z, like an ISO timestamp.
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799_999)]
CostMicros = Annotated[int, msgspec.Meta(ge=0, le=100_000_000_000)]  # CallCostUsd's bound


class AnalyticsEvent(msgspec.Struct, kw_only=True):
    """One LLM call. Exactly one of ``timestamp`` (ISO 8601; UTC when it has no offset) and
    ``timestamp_ms`` (Unix milliseconds), and one of ``cost_usd`` and ``cost_micros``."""

    event_id: Label
    event_type: EventType
    timestamp: datetime | None = None
    timestamp_ms: EpochMs | None = None
    model: Label
    provider: Label
    input_tokens: TokenCount
    output_tokens: TokenCount
    cost_usd: CallCostUsd | None = None
    cost_micros: CostMicros | None = None
    latency_ms: LatencyMs | None = None
    error_code: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    error_message: Annotated[str, msgspec.Meta(max_length=2000)] | None = None

    def __post_init__(self) -> None:
        problems = []
        if (self.timestamp is None) == (self.timestamp_ms is None):
            problems.append("give exactly one of timestamp and timestamp_ms")
        if (self.cost_usd is None) == (self.cost_micros is None):
            problems.append("give exactly one of cost_usd and cost_micros")
        if problems:
            raise ValueError("; ".join(problems).capitalize())
        if self.timestamp is not None:
            self.timestamp = as_utc(self.timestamp)

    @property
    def occurred_at(self) -> datetime:
        if self.timestamp is not None:
            return self.timestamp
        assert self.timestamp_ms is not None  # __post_init__
        seconds, ms = divmod(self.timestamp_ms, 1000)
        return datetime.fromtimestamp(seconds, UTC) + timedelta(milliseconds=ms)

    @property
    def cost(self) -> int:
        """Microdollars; a USD figure rounds up, like every charge."""
        return self.cost_micros if self.cost_micros is not None else charge_micros(self.cost_usd or 0)


class AnalyticsBatch(msgspec.Struct, kw_only=True):
    events: Annotated[list[AnalyticsEvent], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
    ic_token: str | None = None  # seed compatibility; the Authorization header is preferred


class EventOutcome(msgspec.Struct, kw_only=True):
    event_id: str
    status: Literal["accepted", "duplicate"]


class IngestResult(msgspec.Struct, kw_only=True):
    """Per event, in the order sent: ``accepted`` (new, counted and charged now) or ``duplicate``
    (already counted, by either path, or earlier in the same batch)."""

    accepted: int
    duplicates: int
    events: list[EventOutcome]
