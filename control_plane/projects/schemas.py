"""Wire types of projects."""

import msgspec
from msgspec import UNSET, UnsetType

from control_plane.agents.schemas import Description, Name
from control_plane.lib.updates import PartialUpdate


class ProjectCreate(msgspec.Struct, kw_only=True):
    name: Name
    description: Description | None = None


class ProjectUpdate(PartialUpdate, kw_only=True):
    name: Name | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET


class Project(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Counts and totals over the project's live agents that the caller may read."""

    id: str
    name: str
    agent_count: int
    user_count: int
    budget: float
    spent: float
    created_at: str
    updated_at: str
    description: str | None = None
