"""Resolve the caller of a request: a user (JWT) or an agent (IC token).

User-facing endpoints take ``user: UserPrincipal`` (an IC token there is 403);
the budget protocol takes an IC token (anything else is 401).
"""

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request
from litestar.di import Provide

from control_plane.api_tokens import repository as api_tokens
from control_plane.auth import jwt_tokens, revocation
from control_plane.lib.db import pool_of
from control_plane.lib.errors import ApiError, invalid_token, permission_denied
from control_plane.tokens import repository as ic_tokens
from control_plane.users import repository as users
from iron import ids

ROLES = ("admin", "user", "viewer")


@dataclass(frozen=True, slots=True)
class UserPrincipal:
    user_id: str
    role: str
    jti: str | None = None  # the access token's id (None for an API token): what logout revokes

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


async def current_user(request: Request[Any, Any, Any]) -> UserPrincipal:
    token = bearer_token(request)
    if token is None:
        raise invalid_token("Authentication required")
    if token.startswith(f"{ids.IC_TOKEN}_"):
        raise permission_denied("IC tokens are for the budget protocol only")
    state = request.app.state
    if token.startswith(f"{ids.API_TOKEN_VALUE}_"):
        user_id = await api_tokens.owner(pool_of(state), token)
        jti = None
    else:
        try:
            claims = jwt_tokens.verify(token, state.settings.jwt_secret)
        except jwt_tokens.TokenExpired:
            raise ApiError(401, "AUTH_TOKEN_EXPIRED", "Authentication token expired") from None
        except jwt_tokens.TokenInvalid:
            raise invalid_token() from None
        if await revocation.is_revoked(state.redis, claims.jti):
            raise invalid_token("Authentication token revoked")
        user_id, jti = claims.user_id, claims.jti
    user = await users.by_id(pool_of(state), user_id) if user_id else None
    if user is None or user.status != "active":  # a suspended user's tokens stop working at once
        raise invalid_token()
    return UserPrincipal(user.id, user.role, jti)


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
