"""Wire types of API tokens. The value appears only in :class:`ApiTokenIssued`."""

from typing import Annotated

import msgspec


class ApiTokenCreate(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    expires_in_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = None  # None: never expires


class ApiToken(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    name: str
    user_id: str
    status: str  # active, revoked or expired
    created_at: str
    last_used_at: str | None = None
    expires_at: str | None = None
    revoked_at: str | None = None


class ApiTokenIssued(ApiToken, kw_only=True, omit_defaults=True):
    token: str  # apitok_...: shown in this response only
