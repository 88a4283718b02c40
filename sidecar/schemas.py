"""Wire types of the sidecar's runtime API: one definition, used by the server and the SDK."""

import msgspec

from iron.protocol import CallCostUsd, Label, LatencyMs, TokenCount, UsageStatus


class ReserveRequest(msgspec.Struct, kw_only=True):
    """``request_id``, when given, makes a retried reserve hold once and names the reservation."""

    estimated_cost_usd: CallCostUsd
    request_id: Label | None = None


class ReserveResponse(msgspec.Struct, kw_only=True):
    reservation_id: str
    remaining_usd: float


class CommitRequest(msgspec.Struct, kw_only=True):
    reservation_id: Label
    cost_usd: CallCostUsd
    input_tokens: TokenCount
    output_tokens: TokenCount
    model: Label
    status: UsageStatus
    provider: Label | None = None
    latency_ms: LatencyMs | None = None


class CancelRequest(msgspec.Struct, kw_only=True):
    reservation_id: Label


class ReportRequest(msgspec.Struct, kw_only=True):
    """Usage of a call made without a reservation; idempotent by ``request_id``."""

    request_id: Label
    cost_usd: CallCostUsd
    input_tokens: TokenCount
    output_tokens: TokenCount
    model: Label
    status: UsageStatus = "completed"
    provider: Label | None = None
    latency_ms: LatencyMs | None = None


class BudgetView(msgspec.Struct, kw_only=True):
    agent_id: str
    lease_id: str | None
    granted_usd: float
    spent_usd: float
    reserved_usd: float
    remaining_usd: float
    expires_at_ms: int
    live_reservations: int
    pending_journal: int
    control_plane_reachable: bool
    budget_exhausted: bool


class ProviderView(msgspec.Struct, kw_only=True):
    provider: str
    provider_id: str
    api_key: str
    base_url: str


class ErrorDetail(msgspec.Struct, kw_only=True, omit_defaults=True):
    code: str
    message: str
    fields: dict[str, str] | None = None
    details: dict[str, float] | None = None
    request_id: str = ""
    timestamp: str = ""


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


#: Response header naming how a commit or report was charged.
OUTCOME_HEADER = "x-iron-outcome"
