"""Wire types of the providers domain."""

from typing import Annotated, Literal

import msgspec

ProviderType = Literal["openai", "anthropic", "azure_openai", "google", "mistral", "cohere", "custom"]
Url = Annotated[str, msgspec.Meta(min_length=8, max_length=2048, pattern=r"^https?://[^\s]+$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Model = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Credentials(msgspec.Struct, kw_only=True):
    api_key: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class ProviderCreate(msgspec.Struct, kw_only=True):
    name: Name
    type: ProviderType
    endpoint: Url
    credentials: Credentials
    models: Annotated[list[Model], msgspec.Meta(max_length=200)] = []


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
