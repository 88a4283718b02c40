"""Wire types of IC tokens. A token's value appears only in :class:`IcTokenIssued`, once."""

from typing import Annotated

import msgspec

from iron import ids

AgentId = Annotated[str, msgspec.Meta(pattern=ids.pattern(ids.AGENT))]


class IcTokenIssued(msgspec.Struct, kw_only=True):
    id: str
    token: str
    created_at: str


class IcTokenCreate(msgspec.Struct, kw_only=True):
    agent_id: AgentId


class IcTokenCreated(msgspec.Struct, kw_only=True):
    id: str
    agent_id: str
    token: str
    created_at: str


class IcTokenRegenerated(msgspec.Struct, kw_only=True):
    agent_id: str
    ic_token: IcTokenIssued
    old_token_invalidated: bool


class IcToken(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A token's metadata: never its value, which is not stored."""

    id: str
    agent_id: str
    agent_name: str
    status: str  # active | revoked
    created_at: str
    revoked_at: str | None = None
