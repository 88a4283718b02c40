"""API token endpoints. Everyone manages their own tokens; admins see and revoke everyone's."""

from datetime import datetime, timedelta
from typing import Any

import asyncpg
from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, RawBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from control_plane.api_tokens import repository
from control_plane.api_tokens.repository import ApiTokenRow
from control_plane.api_tokens.schemas import ApiToken, ApiTokenCreate, ApiTokenIssued
from control_plane.audit import recorder as audit
from control_plane.auth.principals import UserPrincipal
from control_plane.auth.secrets import new_token
from control_plane.lib.errors import conflict, not_found, permission_denied
from control_plane.lib.filters import SEARCH, IdOf, OneOf
from control_plane.lib.listing import Listing
from control_plane.lib.pagination import Page, page_of
from control_plane.lib.params import checked_id
from control_plane.realtime import publisher
from iron import ids
from iron.timefmt import iso, utcnow
from iron.validation import decode


def _iso(moment: datetime | None) -> str | None:
    return iso(moment) if moment else None


def to_wire(row: ApiTokenRow) -> ApiToken:
    return ApiToken(
        id=row.id,
        name=row.name,
        user_id=row.user_id,
        status=row.status,
        created_at=iso(row.created_at),
        last_used_at=_iso(row.last_used_at),
        expires_at=_iso(row.expires_at),
        revoked_at=_iso(row.revoked_at),
    )


def issued(row: ApiTokenRow, token: str) -> ApiTokenIssued:
    return ApiTokenIssued(**{f: getattr(to_wire(row), f) for f in ApiToken.__struct_fields__}, token=token)


async def _visible(pool: asyncpg.Pool, user: UserPrincipal, token_id: str) -> ApiTokenRow:
    """The token if the caller may see it: their own, or any for an admin; else 404."""
    checked_id(ids.API_TOKEN, token_id, "token_id")
    row = await repository.by_id(pool, token_id)
    if row is None or not (user.is_admin or row.user_id == user.user_id):
        raise not_found("API token", token_id=token_id)
    return row


@post("/api/v1/api-tokens")
async def create_api_token(
    request: Request[Any, Any, Any],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> ApiTokenIssued:
    data = decode(body, ApiTokenCreate)
    token = new_token(ids.API_TOKEN_VALUE)
    expires_at = utcnow() + timedelta(days=data.expires_in_days) if data.expires_in_days else None
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.insert(
            conn,
            token_id=ids.new_id(ids.API_TOKEN),
            user_id=user.user_id,
            name=data.name,
            token=token,
            expires_at=expires_at,
        )
        await audit.record(
            conn,
            audit.actor_of(request, user),
            "API_TOKEN_CREATED",
            "api_token",
            row.id,
            metadata={"name": row.name, "user_id": row.user_id, "expires_at": _iso(row.expires_at)},
        )
    return issued(row, token)


_LIST = Listing(
    {"user_id": IdOf(ids.USER), "status": OneOf(repository.STATUSES), "search": SEARCH},
    repository.SORTABLE,
    "-created_at",
)


@get("/api/v1/api-tokens", opt=_LIST.doc())
async def list_api_tokens(
    request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> Page[ApiToken]:
    """The caller's tokens; for admins everyone's, or ``user_id``'s. Search: the name."""
    found, page = _LIST.read(request.query_params)
    owner = found.pop("user_id")
    if not user.is_admin:
        # someone else's user_id finds nothing, as if those tokens did not exist
        owner = user.user_id if owner in (None, user.user_id) else ids.new_id(ids.USER)
    where = repository.ApiTokenFilter(user_id=owner, **found)
    rows, total = await repository.list_page(pool, where, page.order_by, page.per_page, page.offset)
    return page_of([to_wire(row) for row in rows], page, total)


@get("/api/v1/api-tokens/{token_id:str}")
async def get_api_token(
    token_id: FromPath[str], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> ApiToken:
    return to_wire(await _visible(pool, user, token_id))


@delete("/api/v1/api-tokens/{token_id:str}", status_code=204)
async def revoke_api_token(
    request: Request[Any, Any, Any],
    token_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Response[None]:
    """Revoke (owner or admin): the token is refused from the next request on. It stays listed."""
    await _visible(pool, user, token_id)
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.revoke(conn, token_id)
        if row is None:
            raise conflict("API token already revoked", token_id=token_id)
        await audit.record(
            conn,
            audit.actor_of(request, user),
            "API_TOKEN_REVOKED",
            "api_token",
            token_id,
            metadata={"name": row.name, "user_id": row.user_id},
        )
    publisher.of(request.app.state).recheck(row.user_id)  # ends the sockets opened with it
    return Response(None, status_code=HTTP_204_NO_CONTENT)


@post("/api/v1/api-tokens/{token_id:str}/rotate", status_code=200)
async def rotate_api_token(
    request: Request[Any, Any, Any],
    token_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> ApiTokenIssued:
    """A new value for a live token (same id, name and expiry); the old value is refused at once.

    Owner only: an admin may revoke anyone's token, but handing an admin a working
    credential of another user would let them act as that user.
    """
    visible = await _visible(pool, user, token_id)
    if visible.user_id != user.user_id:
        raise permission_denied("Only the token's owner can rotate it")
    token = new_token(ids.API_TOKEN_VALUE)
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.rotate(conn, token_id, token)
        if row is None:
            raise conflict("Only an active API token can be rotated", token_id=token_id)
        await audit.record(
            conn,
            audit.actor_of(request, user),
            "API_TOKEN_ROTATED",
            "api_token",
            token_id,
            metadata={"name": row.name, "user_id": row.user_id},
        )
    publisher.of(request.app.state).recheck(row.user_id)  # ends the sockets opened with the old value
    return issued(row, token)


handlers = [create_api_token, list_api_tokens, get_api_token, revoke_api_token, rotate_api_token]
