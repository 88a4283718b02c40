"""Wire types of the agents domain."""

from typing import Annotated

import msgspec

from iron import ids

ProviderId = Annotated[str, msgspec.Meta(pattern=ids.pattern(ids.PROVIDER))]
ProjectId = Annotated[str, msgspec.Meta(pattern=ids.pattern(ids.PROJECT))]
BudgetUsd = Annotated[float, msgspec.Meta(ge=0, le=1_000_000_000)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]


class AgentCreate(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    budget: BudgetUsd
    providers: Annotated[list[ProviderId], msgspec.Meta(max_length=20)] = []
    project_id: ProjectId | None = None
    description: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=20)] = []


class IcTokenIssued(msgspec.Struct, kw_only=True):
    id: str
    token: str
    created_at: str


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
