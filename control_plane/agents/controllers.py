"""Agent endpoints. Users manage their own agents, admins all, viewers read their own.

Who may do what is decided in :mod:`control_plane.agents.service`.
"""

from dataclasses import replace
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, RawBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from control_plane.agents import repository, service
from control_plane.agents.repository import AgentRow
from control_plane.agents.schemas import (
    Agent,
    AgentCreate,
    AgentCreated,
    AgentDeleted,
    AgentProvidersUpdate,
    AgentStatus,
    AgentUpdate,
    RequestCounts,
    to_wire,
)
from control_plane.audit import recorder as audit
from control_plane.auth.principals import UserPrincipal
from control_plane.budget import repository as budget_repo
from control_plane.lib.db import Executor
from control_plane.lib.errors import not_found, permission_denied
from control_plane.lib.filters import SEARCH, IdOf, OneOf
from control_plane.lib.listing import Listing
from control_plane.lib.pagination import Page, page_of
from control_plane.lib.params import checked_id
from control_plane.providers import repository as providers
from control_plane.providers.controllers import to_wire as provider_to_wire
from control_plane.providers.schemas import AssignedProviders
from control_plane.realtime import publisher
from control_plane.tokens import repository as ic_tokens
from control_plane.tokens.schemas import IcTokenIssued
from iron import ids
from iron.money import grant_micros, usd
from iron.timefmt import iso
from iron.validation import decode

_ONE = "/api/v1/agents/{agent_id:str}"


def _fields_of(row: AgentRow) -> dict[str, Any]:
    """The agent's wire fields, to extend into a larger shape."""
    return msgspec.structs.asdict(to_wire(row))


@post("/api/v1/agents")
async def create_agent(
    request: Request[Any, Any, Any],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> AgentCreated:
    if user.role == "viewer":
        raise permission_denied("Viewers cannot create agents")
    data = decode(body, AgentCreate)
    agent_id = ids.new_id(ids.AGENT)
    async with pool.acquire() as conn, conn.transaction():
        await service.check_references(conn, data.providers, data.project_id)
        await repository.insert(
            conn,
            agent_id=agent_id,
            name=data.name,
            description=data.description,
            tags=data.tags,
            owner_id=user.user_id,
            project_id=data.project_id,
            budget_micros=0,
            provider_ids=data.providers,
        )
        await budget_repo.set_budget(
            conn, agent_id, 0, grant_micros(data.budget), user.user_id, "initial budget"
        )
        token = await ic_tokens.issue(conn, agent_id)
        row = await repository.by_id(conn, agent_id)
        await audit.record(
            conn,
            audit.actor_of(request, user),
            "AGENT_CREATED",
            "agent",
            agent_id,
            metadata={"name": data.name, "budget": data.budget, "providers": data.providers},
        )
    assert row is not None
    publisher.of(request.app.state).agent(agent_id, "created")
    issued = IcTokenIssued(id=token.id, token=token.token, created_at=iso(token.created_at))
    return AgentCreated(**_fields_of(row), ic_token=issued)


_LIST = Listing(
    {"status": OneOf(("active",)), "project_id": IdOf(ids.PROJECT), "search": SEARCH},
    repository.SORTABLE,
    "-created_at",
    tiebreak="a.id",
)


@get("/api/v1/agents", opt=_LIST.doc())
async def list_agents(
    request: Request[Any, Any, Any],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Page[Agent]:
    """Admins see every agent; users and viewers their own. Search: name and description."""
    found, page = _LIST.read(request.query_params)
    where = repository.AgentFilter(owner_id=None if user.is_admin else user.user_id, **found)
    rows, total = await repository.list_page(pool, where, page.order_by, page.per_page, page.offset)
    return page_of([to_wire(row) for row in rows], page, total)


@get(_ONE)
async def get_agent(
    agent_id: FromPath[str], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> Agent:
    return to_wire(await service.readable(pool, user, agent_id))


@put(_ONE)
async def update_agent(
    request: Request[Any, Any, Any],
    agent_id: FromPath[str],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Agent:
    """Name, description, tags, project and (admins) owner; the budget changes through the limits
    endpoint."""
    checked_id(ids.AGENT, agent_id, "agent_id")
    changes = decode(body, AgentUpdate).given()
    async with pool.acquire() as conn, conn.transaction():
        await service.check_owner(conn, user, changes.get("owner_id"))  # before the agent: lock order
        row = await service.manageable(conn, user, agent_id)
        await service.check_references(conn, project_id=changes.get("project_id"))
        before = {field: getattr(row, field) for field in changes}
        await repository.update(conn, replace(row, **changes))
        actor = audit.actor_of(request, user)
        await audit.record(conn, actor, "AGENT_UPDATED", "agent", agent_id, before=before, after=changes)
        updated = await repository.by_id(conn, agent_id)
    assert updated is not None  # the row is locked
    moved = updated.owner_id != row.owner_id
    publisher.of(request.app.state).agent(agent_id, "updated", row.owner_id if moved else None)
    return to_wire(updated)


@delete(_ONE, status_code=200)
async def delete_agent(
    request: Request[Any, Any, Any],
    agent_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> AgentDeleted:
    """Soft delete: the agent disappears from every read, its token and open leases end."""
    async with pool.acquire() as conn, conn.transaction():
        row = await service.manageable(conn, user, agent_id)
        deleted = await service.delete(conn, row)
        await audit.record(
            conn,
            audit.actor_of(request, user),
            "AGENT_DELETED",
            "agent",
            agent_id,
            before={"name": row.name, "status": row.status},
            after={"status": "deleted"},
            metadata={
                "ic_token_revoked": deleted.ic_token_revoked,
                "leases_closed": deleted.leases_closed,
                "returned": usd(deleted.returned, 6),
                "budget_requests_cancelled": deleted.budget_requests_cancelled,
            },
        )
    publisher.of(request.app.state).agent(agent_id, "deleted")
    return AgentDeleted(
        id=agent_id,
        status="deleted",
        ic_token_revoked=deleted.ic_token_revoked,
        leases_closed=deleted.leases_closed,
        returned=usd(deleted.returned, 6),
        budget_requests_cancelled=deleted.budget_requests_cancelled,
    )


async def _assigned(conn: Executor, agent_id: str) -> AssignedProviders:
    rows = await providers.assigned_to(conn, agent_id)
    return AssignedProviders(agent_id=agent_id, providers=[provider_to_wire(row) for row in rows])


@get(f"{_ONE}/providers")
async def list_agent_providers(
    agent_id: FromPath[str], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> AssignedProviders:
    await service.readable(pool, user, agent_id)
    return await _assigned(pool, agent_id)


@put(f"{_ONE}/providers")
async def assign_agent_providers(
    request: Request[Any, Any, Any],
    agent_id: FromPath[str],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> AssignedProviders:
    """Replace the agent's providers with ``providers``, in that order (the first is the default)."""
    checked_id(ids.AGENT, agent_id, "agent_id")
    data = decode(body, AgentProvidersUpdate)
    async with pool.acquire() as conn, conn.transaction():
        row = await service.manageable(conn, user, agent_id)
        await service.check_references(conn, data.providers)
        await repository.set_providers(conn, agent_id, data.providers)
        await audit.record(
            conn,
            audit.actor_of(request, user),
            "AGENT_PROVIDERS_UPDATED",
            "agent",
            agent_id,
            before={"providers": row.providers},
            after={"providers": data.providers},
        )
        return await _assigned(conn, agent_id)


@delete(f"{_ONE}/providers/{{provider_id:str}}", status_code=204)
async def remove_agent_provider(
    request: Request[Any, Any, Any],
    agent_id: FromPath[str],
    provider_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Response[None]:
    checked_id(ids.PROVIDER, provider_id, "provider_id")
    async with pool.acquire() as conn, conn.transaction():
        await service.manageable(conn, user, agent_id)
        if not await repository.remove_provider(conn, agent_id, provider_id):
            raise not_found("Provider assignment", agent_id=agent_id, provider_id=provider_id)
        await audit.record(
            conn,
            audit.actor_of(request, user),
            "AGENT_PROVIDER_REMOVED",
            "agent",
            agent_id,
            metadata={"provider_id": provider_id},
        )
    return Response(None, status_code=HTTP_204_NO_CONTENT)


@get(f"{_ONE}/status")
async def agent_status(
    agent_id: FromPath[str], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> AgentStatus:
    """The agent's money, request counts and last request (from reported usage), open leases."""
    row = await service.readable(pool, user, agent_id)
    seen = await repository.activity(pool, agent_id)
    return AgentStatus(
        **_fields_of(row),
        requests=RequestCounts(total=seen.requests, completed=seen.completed, failed=seen.failed),
        open_leases=seen.open_leases,
        last_request_at=iso(seen.last_request_at) if seen.last_request_at else None,
    )


handlers = [
    create_agent,
    list_agents,
    get_agent,
    update_agent,
    delete_agent,
    list_agent_providers,
    assign_agent_providers,
    remove_agent_provider,
    agent_status,
]
