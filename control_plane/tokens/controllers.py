"""IC token endpoints, in two families over one set of rules (:mod:`control_plane.tokens.service`).

Per agent: ``POST/GET/DELETE /api/v1/agents/{id}/ic-token`` and ``POST .../ic-token/regenerate``.
By token: ``GET/POST /api/v1/tokens``, ``GET/DELETE /api/v1/tokens/{id}``, ``PUT .../rotate``.

Whoever may read an agent sees its tokens' metadata; whoever may change it
manages them. A token's value is returned once, when it is issued, and is not
stored: there is no endpoint that shows it again.
"""

from typing import Any

import asyncpg
from litestar import Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, RawBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from control_plane.agents import service as agents
from control_plane.audit import recorder as audit
from control_plane.auth.principals import UserPrincipal
from control_plane.lib.db import Executor
from control_plane.lib.errors import not_found
from control_plane.lib.filters import SEARCH, IdOf, OneOf
from control_plane.lib.listing import Listing
from control_plane.lib.pagination import Page, page_of
from control_plane.lib.params import checked_id
from control_plane.tokens import repository, service
from control_plane.tokens.repository import IssuedToken, TokenRow
from control_plane.tokens.schemas import (
    IcToken,
    IcTokenCreate,
    IcTokenCreated,
    IcTokenIssued,
    IcTokenRegenerated,
)
from iron import ids
from iron.timefmt import iso
from iron.validation import decode

_PER_AGENT = "/api/v1/agents/{agent_id:str}/ic-token"
_ALL = "/api/v1/tokens"
_ONE = "/api/v1/tokens/{token_id:str}"
_LIST = Listing(
    {"agent_id": IdOf(ids.AGENT), "status": OneOf(("active", "revoked")), "search": SEARCH},
    repository.SORTABLE,
    "-created_at",
    tiebreak="t.id",
)


def to_wire(row: TokenRow) -> IcToken:
    return IcToken(
        id=row.id,
        agent_id=row.agent_id,
        agent_name=row.agent_name,
        status="revoked" if row.revoked_at else "active",
        created_at=iso(row.created_at),
        revoked_at=iso(row.revoked_at) if row.revoked_at else None,
    )


def _created(agent_id: str, token: IssuedToken) -> IcTokenCreated:
    return IcTokenCreated(id=token.id, agent_id=agent_id, token=token.token, created_at=iso(token.created_at))


def _regenerated(agent_id: str, token: IssuedToken) -> IcTokenRegenerated:
    issued = IcTokenIssued(id=token.id, token=token.token, created_at=iso(token.created_at))
    return IcTokenRegenerated(agent_id=agent_id, ic_token=issued, old_token_invalidated=True)


async def _visible(conn: Executor, user: UserPrincipal, token_id: str) -> TokenRow:
    """The token, if the user may read its agent."""
    checked_id(ids.IC_TOKEN, token_id, "token_id")
    row = await repository.by_id(conn, token_id)
    if row is None or not agents.may_read(user, row):
        raise not_found("IC token", token_id=token_id)
    return row


# --- per agent ------------------------------------------------------------------------------------


@post(_PER_AGENT, status_code=201)
async def create_agent_ic_token(
    request: Request[Any, Any, Any],
    agent_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> IcTokenCreated:
    """A token for an agent that has none (after a revoke); 409 if it has one."""
    async with pool.acquire() as conn, conn.transaction():
        await agents.manageable(conn, user, agent_id)
        token = await service.create(conn, audit.actor_of(request, user), agent_id)
    return _created(agent_id, token)


@get(_PER_AGENT)
async def get_agent_ic_token(
    agent_id: FromPath[str], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> IcToken:
    """The live token's metadata; 404 when the agent has none."""
    await agents.readable(pool, user, agent_id)
    row = await repository.live_for_agent(pool, agent_id)
    if row is None:
        raise not_found("IC token", agent_id=agent_id)
    return to_wire(row)


@post(f"{_PER_AGENT}/regenerate", status_code=200)
async def regenerate_ic_token(
    request: Request[Any, Any, Any],
    agent_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> IcTokenRegenerated:
    async with pool.acquire() as conn, conn.transaction():
        await agents.manageable(conn, user, agent_id)
        token = await service.rotate(conn, audit.actor_of(request, user), agent_id)
    return _regenerated(agent_id, token)


@delete(_PER_AGENT, status_code=204)
async def revoke_ic_token(
    request: Request[Any, Any, Any],
    agent_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Response[None]:
    async with pool.acquire() as conn, conn.transaction():
        await agents.manageable(conn, user, agent_id)
        await service.revoke(conn, audit.actor_of(request, user), agent_id)
    return Response(None, status_code=HTTP_204_NO_CONTENT)


# --- by token -------------------------------------------------------------------------------------


@get(_ALL, opt=_LIST.doc())
async def list_ic_tokens(
    request: Request[Any, Any, Any],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Page[IcToken]:
    """Tokens of the agents the caller may read, revoked ones too. Search: the agent's name."""
    found, page = _LIST.read(request.query_params)
    where = repository.TokenFilter(
        owner_id=None if user.is_admin else user.user_id,
        agent_id=found["agent_id"],
        live=None if found["status"] is None else found["status"] == "active",
        search=found["search"],
    )
    rows, total = await repository.list_page(pool, where, page.order_by, page.per_page, page.offset)
    return page_of([to_wire(row) for row in rows], page, total)


@post(_ALL, status_code=201)
async def create_ic_token(
    request: Request[Any, Any, Any],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> IcTokenCreated:
    """``{agent_id}``: the same as ``POST /api/v1/agents/{agent_id}/ic-token``."""
    data = decode(body, IcTokenCreate)
    async with pool.acquire() as conn, conn.transaction():
        await agents.manageable(conn, user, data.agent_id)
        token = await service.create(conn, audit.actor_of(request, user), data.agent_id)
    return _created(data.agent_id, token)


@get(_ONE)
async def get_ic_token(
    token_id: FromPath[str], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> IcToken:
    return to_wire(await _visible(pool, user, token_id))


@delete(_ONE, status_code=204)
async def delete_ic_token(
    request: Request[Any, Any, Any],
    token_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Response[None]:
    """Revoke; 409 if it is revoked already."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _visible(conn, user, token_id)
        await agents.manageable(conn, user, row.agent_id)
        await service.revoke(conn, audit.actor_of(request, user), row.agent_id, token_id)
    return Response(None, status_code=HTTP_204_NO_CONTENT)


@put(f"{_ONE}/rotate")
async def rotate_ic_token(
    request: Request[Any, Any, Any],
    token_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> IcTokenRegenerated:
    """Revoke this token and issue its successor in one transaction; 409 if it is revoked already."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _visible(conn, user, token_id)
        await agents.manageable(conn, user, row.agent_id)
        token = await service.rotate(conn, audit.actor_of(request, user), row.agent_id, token_id)
    return _regenerated(row.agent_id, token)


handlers = [
    create_agent_ic_token,
    get_agent_ic_token,
    regenerate_ic_token,
    revoke_ic_token,
    list_ic_tokens,
    create_ic_token,
    get_ic_token,
    delete_ic_token,
    rotate_ic_token,
]
