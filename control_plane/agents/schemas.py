"""Wire types of the agents domain."""

from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from control_plane.agents.repository import AgentRow
from control_plane.budget.ledger import available, percent_used
from control_plane.lib.updates import PartialUpdate
from control_plane.tokens.schemas import IcTokenIssued
from iron import ids
from iron.money import usd
from iron.timefmt import iso

ProviderId = Annotated[str, msgspec.Meta(pattern=ids.pattern(ids.PROVIDER))]
ProjectId = Annotated[str, msgspec.Meta(pattern=ids.pattern(ids.PROJECT))]
UserId = Annotated[str, msgspec.Meta(pattern=ids.pattern(ids.USER))]
BudgetUsd = Annotated[float, msgspec.Meta(ge=0, le=1_000_000_000)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]  # of an agent, provider or project
Description = Annotated[str, msgspec.Meta(max_length=1000)]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=20)]
ProviderIds = Annotated[list[ProviderId], msgspec.Meta(max_length=20)]


class AgentCreate(msgspec.Struct, kw_only=True):
    name: Name
    budget: BudgetUsd
    providers: ProviderIds = []
    project_id: ProjectId | None = None
    description: Description | None = None
    tags: Tags = []


class AgentUpdate(PartialUpdate, kw_only=True):
    """The budget is not here: it changes through ``PUT /api/v1/limits/agents/{id}/budget``.
    Only an admin gives an agent to another owner."""

    name: Name | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    tags: Tags | UnsetType = UNSET
    project_id: ProjectId | UnsetType | None = UNSET
    owner_id: UserId | UnsetType = UNSET


class AgentProvidersUpdate(msgspec.Struct, kw_only=True):
    providers: ProviderIds


class Agent(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    name: str
    budget: float
    spent: float
    outstanding: float
    overdrawn: float
    remaining: float
    percent_used: float
    status: str
    providers: list[str]
    owner_id: str
    created_at: str
    updated_at: str
    project_id: str | None = None
    description: str | None = None
    tags: list[str] = []


class AgentCreated(Agent, kw_only=True):
    ic_token: IcTokenIssued


class RequestCounts(msgspec.Struct, kw_only=True):
    total: int
    completed: int
    failed: int


class AgentStatus(Agent, kw_only=True):
    """The agent's money and what its runtimes reported."""

    requests: RequestCounts
    open_leases: int
    last_request_at: str | None = None


class AgentDeleted(msgspec.Struct, kw_only=True):
    id: str
    status: str
    ic_token_revoked: bool
    leases_closed: int
    returned: float  # the open leases' unused grant, back from outstanding
    budget_requests_cancelled: list[str]


def to_wire(row: AgentRow) -> Agent:
    remaining = available(row.budget_micros, row.spent_micros, row.outstanding_micros)
    return Agent(
        id=row.id,
        name=row.name,
        budget=usd(row.budget_micros),
        spent=usd(row.spent_micros),
        outstanding=usd(row.outstanding_micros),
        overdrawn=usd(row.overdrawn_micros),
        remaining=usd(remaining),
        percent_used=percent_used(row.spent_micros, row.budget_micros),
        status=row.status,
        providers=list(row.providers),
        owner_id=row.owner_id,
        project_id=row.project_id,
        description=row.description,
        tags=list(row.tags),
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
    )
