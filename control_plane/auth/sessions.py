"""Sessions: login (with throttling and lockout), refresh-token rotation, logout.

A session is a family of refresh tokens. Each refresh uses up its token and issues
the next one; a used token coming back means two parties hold the session (one of
them a thief), so the whole family is revoked and both must log in again.
"""

import logging
from datetime import timedelta

import asyncpg
import redis.asyncio as redis

from control_plane.auth import jwt_tokens, revocation, throttle
from control_plane.auth import repository as sessions
from control_plane.auth.principals import UserPrincipal
from control_plane.auth.schemas import LoginResponse, UserSummary
from control_plane.auth.secrets import new_token, token_hash, verify_password
from control_plane.lib.db import Executor
from control_plane.lib.errors import ApiError, invalid_token, validation_error
from control_plane.settings import Settings
from control_plane.users import repository as users
from control_plane.users.repository import UserRow
from iron import ids
from iron.timefmt import iso, utcnow

log = logging.getLogger("iron.control_plane")

LOCKOUT_AFTER = 10  # consecutive wrong passwords
LOCKOUT_S = 15 * 60


def summary_of(user: UserRow) -> UserSummary:
    return UserSummary(id=user.id, email=user.email, role=user.role, name=user.name)


async def _issue(conn: Executor, settings: Settings, user: UserRow, session_id: str) -> LoginResponse:
    access = jwt_tokens.issue(
        user.id,
        settings.jwt_secret,
        settings.access_token_ttl_s,
        session_id=session_id,
        generation=user.token_generation,
    )
    refresh = new_token(ids.REFRESH_TOKEN_VALUE)
    await sessions.insert_refresh_token(
        conn,
        token_hash(refresh),
        user.id,
        session_id,
        utcnow() + timedelta(seconds=settings.refresh_token_ttl_s),
    )
    return LoginResponse(
        user_token=access.token,
        token_type="Bearer",  # noqa: S106
        expires_in=settings.access_token_ttl_s,
        expires_at=iso(access.expires_at),
        refresh_token=refresh,
        user=summary_of(user),
    )


async def login(
    pool: asyncpg.Pool, client: redis.Redis, settings: Settings, ip: str, email: str, password: str
) -> tuple[LoginResponse, throttle.Attempt]:
    """A new session, and the attempt as the IP's throttle counted it (for the rate-limit headers)."""
    attempt = await throttle.begin(client, ip)
    user = await users.by_email(pool, email)
    password_ok = await verify_password(user.password_hash if user else None, password)
    if user is None or not password_ok:
        if user is not None and await users.record_failed_login(pool, user.id, LOCKOUT_AFTER, LOCKOUT_S):
            log.warning("account locked after %d failed logins: user_id=%s ip=%s", LOCKOUT_AFTER, user.id, ip)
        raise ApiError(401, "AUTH_INVALID_CREDENTIALS", "Invalid email or password", headers=attempt.headers)
    attempt = await throttle.forgive(client, attempt)
    locked_until = user.lock_ends
    if locked_until is not None:
        # Only the holder of the password learns of the lock: to a guesser it is one more failure.
        retry_after = max(int((locked_until - utcnow()).total_seconds()), 1)
        raise ApiError(
            403,
            "AUTH_ACCOUNT_LOCKED",
            "This account is locked after repeated failed logins; try again later",
            details={"locked_until": iso(locked_until)},
            headers={**attempt.headers, "Retry-After": str(retry_after)},
        )
    if user.status != "active":
        raise ApiError(403, "AUTH_ACCOUNT_SUSPENDED", "This account is suspended", headers=attempt.headers)
    async with pool.acquire() as conn, conn.transaction():
        await users.clear_failed_logins(conn, user.id)
        response = await _issue(conn, settings, user, ids.new_id("sess"))
    return response, attempt


class SessionEnded(ApiError):
    """A refresh token came back after it was used: whoever holds the session's tokens may have
    stolen one, so the whole session is ended (``user_id`` is whose, for the caller to tell)."""

    def __init__(self, user_id: str) -> None:
        super().__init__(401, "AUTH_INVALID_TOKEN", "Refresh token already used; the session has been ended")
        self.user_id = user_id


async def refresh(
    pool: asyncpg.Pool, client: redis.Redis, settings: Settings, refresh_token: str
) -> LoginResponse:
    """Rotate: use up the presented token, issue a new pair in the same session."""
    hashed = token_hash(refresh_token)
    async with pool.acquire() as conn, conn.transaction():
        row = await sessions.refresh_for_update(conn, hashed)
        if row is None or row.revoked:
            raise invalid_token("Invalid or revoked refresh token")
        if row.expired:
            raise ApiError(401, "AUTH_TOKEN_EXPIRED", "Refresh token expired")
        if not row.used:
            user = await users.by_id(conn, row.user_id)
            if user is None or user.status != "active":
                raise invalid_token("Invalid or revoked refresh token")
            await sessions.mark_used(conn, hashed)
            return await _issue(conn, settings, user, row.family_id)
        await sessions.revoke_family(conn, row.family_id)  # committed before the refusal below
    await _end_access(client, settings, row.family_id)
    raise SessionEnded(row.user_id)


async def logout(pool: asyncpg.Pool, client: redis.Redis, settings: Settings, user: UserPrincipal) -> None:
    """End the session of the presented access token: the token itself, every other access
    token of the session, and its refresh tokens. The user's other sessions carry on."""
    if user.jti is None or user.expires_at is None:
        raise validation_error(
            {"authorization": "An API token is not logged out; revoke it with DELETE /api/v1/api-tokens/{id}"}
        )
    await revocation.revoke(client, user.jti, user.expires_at)
    if user.session_id is not None:
        await _end_access(client, settings, user.session_id)
        await sessions.revoke_family(pool, user.session_id)


async def _end_access(client: redis.Redis, settings: Settings, session_id: str) -> None:
    """Refuse every access token of the session until the last of them would have expired."""
    await revocation.revoke(client, session_id, utcnow() + timedelta(seconds=settings.access_token_ttl_s))
