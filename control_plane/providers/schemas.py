"""Wire types of the providers domain. A key goes in; nothing here ever carries one out."""

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType

from control_plane.agents.schemas import Name
from control_plane.lib.updates import PartialUpdate

ProviderType = Literal["openai", "anthropic", "azure_openai", "google", "mistral", "cohere", "custom"]
ProviderStatus = Literal["active", "disabled"]
Url = Annotated[str, msgspec.Meta(min_length=8, max_length=2048, pattern=r"^https?://[^\s]+$")]
Model = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Models = Annotated[list[Model], msgspec.Meta(max_length=200)]


class Credentials(msgspec.Struct, kw_only=True):
    api_key: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class ProviderCreate(msgspec.Struct, kw_only=True):
    name: Name
    type: ProviderType
    endpoint: Url
    credentials: Credentials
    models: Models = []


class ProviderUpdate(PartialUpdate, kw_only=True):
    """``credentials`` replaces the key; a disabled provider is skipped at handshake."""

    name: Name | UnsetType = UNSET
    type: ProviderType | UnsetType = UNSET
    endpoint: Url | UnsetType = UNSET
    models: Models | UnsetType = UNSET
    status: ProviderStatus | UnsetType = UNSET
    credentials: Credentials | UnsetType = UNSET


class Provider(msgspec.Struct, kw_only=True):
    id: str
    name: str
    type: str
    endpoint: str
    models: list[str]
    credentials_configured: bool
    status: str
    created_at: str
    updated_at: str


class ProviderUsage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Calls reported with this provider's type or name as their label (see the repository)."""

    requests: int
    spent: float
    agents: int  # live agents assigned to it
    last_request_at: str | None = None


class ProviderDetail(Provider, kw_only=True):
    usage: ProviderUsage


class ProviderDeleted(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool
    affected_agents: list[str]  # live agents it was assigned to, now without it


class AssignedProviders(msgspec.Struct, kw_only=True):
    agent_id: str
    providers: list[Provider]  # the first is the agent's default
