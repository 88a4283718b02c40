"""Login. Refresh, logout and validate come with the admin surface."""

from datetime import timedelta
from typing import Any

import asyncpg
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import RawBody

from control_plane.auth import jwt_tokens
from control_plane.auth import repository as sessions
from control_plane.auth.schemas import LoginRequest, LoginResponse, UserSummary
from control_plane.auth.secrets import new_token, token_hash, verify_password
from control_plane.lib.errors import ApiError
from control_plane.users import repository as users
from iron import ids
from iron.timefmt import iso, utcnow
from iron.validation import decode


@post("/api/v1/auth/login", status_code=200)
async def login(
    request: Request[Any, Any, Any], body: RawBody, pool: NamedDependency[asyncpg.Pool]
) -> LoginResponse:
    data = decode(body, LoginRequest)
    user = await users.by_email(pool, data.email)
    password_ok = await verify_password(user.password_hash if user else None, data.password)
    if user is None or not password_ok:
        raise ApiError(401, "AUTH_INVALID_CREDENTIALS", "Invalid email or password")
    if user.status != "active":
        raise ApiError(403, "AUTH_ACCOUNT_SUSPENDED", "This account is suspended")
    settings = request.app.state.settings
    access = jwt_tokens.issue(user.id, settings.jwt_secret, settings.access_token_ttl_s)
    refresh = new_token(ids.REFRESH_TOKEN_VALUE)
    await sessions.insert_refresh_token(
        pool,
        token_hash(refresh),
        user.id,
        utcnow() + timedelta(seconds=settings.refresh_token_ttl_s),
    )
    return LoginResponse(
        user_token=access.token,
        token_type="Bearer",  # noqa: S106
        expires_in=settings.access_token_ttl_s,
        expires_at=iso(access.expires_at),
        refresh_token=refresh,
        user=UserSummary(id=user.id, email=user.email, role=user.role, name=user.name),
    )


handlers = [login]
