"""Wire types of budget-change requests."""

from typing import Annotated, Literal, get_args

import msgspec

from iron import ids

AgentId = Annotated[str, msgspec.Meta(pattern=ids.pattern(ids.AGENT))]
RequestedUsd = Annotated[float, msgspec.Meta(gt=0, le=1_000_000_000)]
# at least one visible character: a blank text is no justification and no explanation
Justification = Annotated[str, msgspec.Meta(min_length=20, max_length=500, pattern=r"\S")]
ReviewNotes = Annotated[str, msgspec.Meta(min_length=1, max_length=1000, pattern=r"\S")]

Status = Literal["pending", "approved", "rejected", "cancelled"]
STATUSES: tuple[str, ...] = get_args(Status)


class BudgetRequestCreate(msgspec.Struct, kw_only=True):
    agent_id: AgentId
    requested_budget: RequestedUsd
    justification: Justification


class BudgetRequestApprove(msgspec.Struct, kw_only=True):
    approved_budget: RequestedUsd | None = None  # default: the requested budget
    review_notes: ReviewNotes | None = None


class BudgetRequestReject(msgspec.Struct, kw_only=True):
    review_notes: ReviewNotes


class AgentFigures(msgspec.Struct, kw_only=True):
    """The agent's ledger now (not when the request was made)."""

    status: str
    budget: float
    spent: float
    outstanding: float
    remaining: float


class BudgetRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    agent_id: str
    agent_name: str
    requester_id: str
    requester_name: str
    current_budget: float  # the agent's budget when the request was made
    requested_budget: float
    justification: str
    status: str
    agent: AgentFigures
    created_at: str
    updated_at: str
    approved_budget: float | None = None
    reviewed_by: str | None = None
    reviewed_at: str | None = None
    review_notes: str | None = None
