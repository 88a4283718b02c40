"""Wire types of the budget protocol: one definition, used by the control plane and the sidecar.

Money crosses the wire as USD numbers; both sides convert to microdollars with
:mod:`iron.money` at the edge.
"""

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from iron import ids
from iron.timefmt import as_utc

LeaseId = Annotated[str, msgspec.Meta(pattern=ids.pattern(ids.LEASE))]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
TokenCount = Annotated[int, msgspec.Meta(ge=0, le=100_000_000)]
# A single call costing more than this is a client bug, not a bill.
CallCostUsd = Annotated[float, msgspec.Meta(ge=0, le=100_000)]
LeaseRequestUsd = Annotated[float, msgspec.Meta(gt=0, le=1000)]
UsageStatus = Literal["completed", "failed"]
LatencyMs = Annotated[int, msgspec.Meta(ge=0, le=86_400_000)]


class HandshakeRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    requested_budget: LeaseRequestUsd = 10.0
    provider: Label | None = None
    runtime_id: Label | None = None
    runtime_version: Label | None = None
    ic_token: str | None = None  # seed compatibility; the Authorization header is preferred


class ProviderInfo(msgspec.Struct, kw_only=True):
    id: str
    type: str
    base_url: str


class HandshakeResponse(msgspec.Struct, kw_only=True):
    agent_id: str
    lease_id: str
    ip_token: str | None
    budget_granted: float
    budget_remaining: float
    lease_granted: float
    expires_at: str
    provider: ProviderInfo | None


class Usage(msgspec.Struct, kw_only=True):
    """One LLM call. ``request_id`` makes reporting idempotent: a replay is charged zero times.
    ``timestamp`` is kept in UTC (one without an offset is UTC)."""

    request_id: Label
    input_tokens: TokenCount
    output_tokens: TokenCount
    tokens: TokenCount | None = None
    cost_usd: CallCostUsd
    model: Label
    provider: Label
    timestamp: datetime
    status: UsageStatus = "completed"
    latency_ms: LatencyMs | None = None
    ic_token: str | None = None  # seed compatibility

    def __post_init__(self) -> None:
        self.timestamp = as_utc(self.timestamp)


class UsageReport(Usage, kw_only=True):
    lease_id: LeaseId


class UsageBatch(msgspec.Struct, kw_only=True):
    lease_id: LeaseId
    reports: Annotated[list[Usage], msgspec.Meta(min_length=1, max_length=1000)]
    ic_token: str | None = None


class BatchReportResponse(msgspec.Struct, kw_only=True):
    accepted: int
    duplicates: int
    lease_spent: float
    budget_remaining: float
    budget_limit: float


class RefreshRequest(msgspec.Struct, kw_only=True):
    """``requested_budget`` 0 is a heartbeat: it extends the lease and grants nothing."""

    lease_id: LeaseId
    requested_budget: Annotated[float, msgspec.Meta(ge=0, le=1000)]
    ic_token: str | None = None


class RefreshResponse(msgspec.Struct, kw_only=True):
    lease_id: str
    budget_granted: float
    budget_remaining: float
    lease_granted: float
    lease_spent: float
    expires_at: str


class ReturnRequest(msgspec.Struct, kw_only=True):
    """The seed's client figures are accepted and ignored: the ledger knows what was reported."""

    lease_id: LeaseId
    final_spent_usd: float | None = None
    returning_usd: float | None = None
    ic_token: str | None = None


class ReturnResponse(msgspec.Struct, kw_only=True):
    lease_id: str
    returned: float
    budget_remaining: float
    lease_status: Literal["closed"] = "closed"


class ProviderKeyResponse(msgspec.Struct, kw_only=True):
    provider: str  # the provider's type, e.g. "openai"
    provider_id: str
    api_key: str
    base_url: str
