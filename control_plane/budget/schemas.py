"""Wire types of budget limits (the admin's side of an agent's budget)."""

from typing import Annotated

import msgspec

from control_plane.agents.schemas import BudgetUsd


class BudgetUpdate(msgspec.Struct, kw_only=True):
    budget: BudgetUsd
    force: bool = False
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class BudgetState(msgspec.Struct, kw_only=True):
    agent_id: str
    previous_budget: float
    budget: float
    spent: float
    outstanding: float
    remaining: float


class BudgetChange(msgspec.Struct, kw_only=True):
    id: int
    old_budget: float
    new_budget: float
    changed_by: str | None
    reason: str | None
    created_at: str


class BudgetHistory(msgspec.Struct, kw_only=True):
    agent_id: str
    data: list[BudgetChange]
