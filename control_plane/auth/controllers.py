"""Auth endpoints: login, refresh, logout, validate. The rules live in :mod:`.sessions`."""

from typing import Any

import asyncpg
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import RawBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from control_plane.auth import sessions
from control_plane.auth.principals import UserPrincipal, authenticate, bearer_token
from control_plane.auth.schemas import (
    LoginRequest,
    LoginResponse,
    RefreshRequest,
    ValidateRequest,
    ValidateResponse,
)
from control_plane.lib.errors import ApiError, validation_error
from control_plane.realtime import publisher
from iron.timefmt import iso
from iron.validation import decode


@post("/api/v1/auth/login", status_code=200)
async def login(
    request: Request[Any, Any, Any], body: RawBody, pool: NamedDependency[asyncpg.Pool]
) -> Response[LoginResponse]:
    data = decode(body, LoginRequest)
    state = request.app.state
    ip = request.client.host if request.client else "unknown"
    session, attempt = await sessions.login(pool, state.redis, state.settings, ip, data.email, data.password)
    return Response(session, headers=attempt.headers)


@post("/api/v1/auth/refresh", status_code=200)
async def refresh(
    request: Request[Any, Any, Any], body: RawBody, pool: NamedDependency[asyncpg.Pool]
) -> LoginResponse:
    data = decode(body, RefreshRequest)
    state = request.app.state
    try:
        return await sessions.refresh(pool, state.redis, state.settings, data.refresh_token)
    except sessions.SessionEnded as ended:
        publisher.of(state).recheck(ended.user_id)  # ends the session's sockets, on every replica
        raise


@post("/api/v1/auth/logout", status_code=204)
async def logout(
    request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> Response[None]:
    state = request.app.state
    await sessions.logout(pool, state.redis, state.settings, user)
    publisher.of(state).recheck(user.user_id)  # ends the session's sockets, on every replica
    return Response(None, status_code=HTTP_204_NO_CONTENT)


@post("/api/v1/auth/validate", status_code=200)
async def validate(request: Request[Any, Any, Any], body: RawBody) -> ValidateResponse:
    """Public: whether a user token or API token is good right now, and whose it is."""
    token = (decode(body, ValidateRequest).token if body.strip() else None) or bearer_token(request)
    if token is None:
        raise validation_error({"token": "Send a token in the body or as Authorization: Bearer"})
    try:
        user, principal = await authenticate(request.app.state, token)
    except ApiError:
        return ValidateResponse(valid=False)
    return ValidateResponse(
        valid=True,
        user=sessions.summary_of(user),
        expires_at=iso(principal.expires_at) if principal.expires_at else None,
    )


handlers = [login, refresh, logout, validate]
