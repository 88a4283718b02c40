"""Wire types of the auth endpoints."""

from typing import Annotated

import msgspec

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class LoginRequest(msgspec.Struct, kw_only=True):
    email: Email
    password: Password


class UserSummary(msgspec.Struct, kw_only=True):
    id: str
    email: str
    role: str
    name: str


class LoginResponse(msgspec.Struct, kw_only=True):
    user_token: str
    token_type: str
    expires_in: int
    expires_at: str
    refresh_token: str
    user: UserSummary


TokenValue = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class RefreshRequest(msgspec.Struct, kw_only=True):
    refresh_token: TokenValue


class ValidateRequest(msgspec.Struct, kw_only=True):
    token: TokenValue | None = None  # or an ``Authorization: Bearer`` header


class ValidateResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    valid: bool
    user: UserSummary | None = None
    expires_at: str | None = None
