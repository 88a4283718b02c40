"""Resolve the caller of a request: a user (JWT or API token) or an agent (IC token).

User-facing endpoints take ``user: UserPrincipal`` (an IC token there is 403);
the budget protocol takes an IC token (anything else is 401).
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from control_plane.api_tokens import repository as api_tokens
from control_plane.auth import jwt_tokens, revocation
from control_plane.lib.db import pool_of
from control_plane.lib.errors import ApiError, invalid_token, permission_denied
from control_plane.tokens import repository as ic_tokens
from control_plane.users import repository as users
from control_plane.users.repository import UserRow
from iron import ids


@dataclass(frozen=True, slots=True)
class UserPrincipal:
    user_id: str
    role: str
    jti: str | None = None  # the access token's id (None for an API token): what logout revokes
    session_id: str | None = None  # the access token's session (refresh-token family)
    expires_at: datetime | None = None  # when the credential expires; None: an API token without expiry

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class AgentPrincipal:
    agent_id: str
    token_id: str
    token: str  # the IC token itself: the key that IP tokens are sealed for


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


@dataclass(frozen=True, slots=True)
class _Credential:
    user_id: str
    generation: int | None  # the user's token generation it was issued under; None: an API token
    jti: str | None = None
    session_id: str | None = None
    expires_at: datetime | None = None


async def _api_token(state: State, token: str) -> _Credential:
    owner = await api_tokens.owner(pool_of(state), token)
    if owner is None:
        raise invalid_token()
    return _Credential(owner.user_id, None, expires_at=owner.expires_at)


async def _access_token(state: State, token: str) -> _Credential:
    try:
        claims = jwt_tokens.verify(token, state.settings.jwt_secret)
    except jwt_tokens.TokenExpired:
        raise ApiError(401, "AUTH_TOKEN_EXPIRED", "Authentication token expired") from None
    except jwt_tokens.TokenInvalid:
        raise invalid_token() from None
    revocable = (claims.jti, claims.session_id) if claims.session_id else (claims.jti,)
    if await revocation.is_revoked(state.redis, *revocable):
        raise invalid_token("Authentication token revoked")
    return _Credential(claims.user_id, claims.generation, claims.jti, claims.session_id, claims.expires_at)


async def authenticate(state: State, token: str) -> tuple[UserRow, UserPrincipal]:
    """The active user a user token (JWT) or API token belongs to; ApiError when there is none."""
    if token.startswith(f"{ids.IC_TOKEN}_"):
        raise permission_denied("IC tokens are for the budget protocol only")
    if token.startswith(f"{ids.API_TOKEN_VALUE}_"):
        credential = await _api_token(state, token)
    else:
        credential = await _access_token(state, token)
    user = await users.by_id(pool_of(state), credential.user_id)
    # Status and generation are read on every request: a suspension or a password reset
    # stops the user's tokens at once, on every replica.
    if user is None or user.status != "active" or credential.generation not in (None, user.token_generation):
        raise invalid_token()
    principal = UserPrincipal(
        user.id, user.role, credential.jti, credential.session_id, credential.expires_at
    )
    return user, principal


async def current_user(request: Request[Any, Any, Any]) -> UserPrincipal:
    token = bearer_token(request)
    if token is None:
        raise invalid_token("Authentication required")
    _, principal = await authenticate(request.app.state, token)
    return principal


def require_admin(user: UserPrincipal) -> None:
    if not user.is_admin:
        raise permission_denied("Admin role required")


class _TokenInBody(msgspec.Struct):
    ic_token: str | None = None


def ic_token_in_body(body: bytes) -> str | None:
    """The seed lets an agent send its IC token as a body field instead of a header."""
    try:
        return msgspec.json.decode(body, type=_TokenInBody).ic_token
    except msgspec.MsgspecError:
        return None


async def current_agent(request: Request[Any, Any, Any], body: bytes) -> AgentPrincipal:
    token = bearer_token(request) or ic_token_in_body(body)
    if token is None:
        raise invalid_token("IC token required")
    if not token.startswith(f"{ids.IC_TOKEN}_"):
        raise invalid_token("The budget protocol takes an IC token")
    owner = await ic_tokens.owner(pool_of(request.app.state), token)
    if owner is None:
        raise invalid_token("IC token is invalid or revoked")
    return AgentPrincipal(owner.agent_id, owner.token_id, token)


user_dependency = {"user": Provide(current_user)}
