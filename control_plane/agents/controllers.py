"""Agent endpoints. Users manage their own agents, admins all, viewers read their own."""

from typing import Any

import asyncpg
from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, RawBody

from control_plane.agents import repository
from control_plane.agents.repository import AgentRow
from control_plane.agents.schemas import Agent, AgentCreate, AgentCreated, IcTokenIssued
from control_plane.audit import recorder as audit
from control_plane.auth.principals import UserPrincipal
from control_plane.budget import repository as budget_repo
from control_plane.budget.ledger import available
from control_plane.lib.errors import not_found, permission_denied, validation_error
from control_plane.lib.pagination import Page, contains_pattern, page_of, page_request
from control_plane.lib.params import checked_id
from control_plane.providers import repository as providers
from control_plane.tokens import repository as ic_tokens
from iron import ids
from iron.money import grant_micros, usd
from iron.timefmt import iso
from iron.validation import decode


def to_wire(row: AgentRow) -> Agent:
    remaining = available(row.budget_micros, row.spent_micros, row.outstanding_micros)
    percent = 100.0 * row.spent_micros / row.budget_micros if row.budget_micros else 0.0
    return Agent(
        id=row.id,
        name=row.name,
        budget=usd(row.budget_micros),
        spent=usd(row.spent_micros),
        outstanding=usd(row.outstanding_micros),
        overdrawn=usd(row.overdrawn_micros),
        remaining=usd(remaining),
        percent_used=round(percent, 2),
        status=row.status,
        providers=list(row.providers),
        owner_id=row.owner_id,
        project_id=row.project_id,
        description=row.description,
        tags=list(row.tags),
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
    )


def may_read(user: NamedDependency[UserPrincipal], row: AgentRow) -> bool:
    return user.is_admin or row.owner_id == user.user_id


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
    known = await providers.existing_ids(pool, data.providers)
    errors = {
        f"providers[{index}]": "Unknown provider"
        for index, provider_id in enumerate(data.providers)
        if provider_id not in known
    }
    if len(set(data.providers)) != len(data.providers):
        errors["providers"] = "Providers must be distinct"
    if data.project_id and not await pool.fetchval("SELECT 1 FROM projects WHERE id = $1", data.project_id):
        errors["project_id"] = "Unknown project"
    if errors:
        raise validation_error(errors)
    agent_id = ids.new_id(ids.AGENT)
    async with pool.acquire() as conn, conn.transaction():
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
    issued = IcTokenIssued(id=token.id, token=token.token, created_at=iso(token.created_at))
    return AgentCreated(**{f: getattr(to_wire(row), f) for f in Agent.__struct_fields__}, ic_token=issued)


_STATUSES = ("active",)


@get("/api/v1/agents")
async def list_agents(
    request: Request[Any, Any, Any],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Page[Agent]:
    """Admins see every agent; users and viewers their own. Filters: status, project_id, search."""
    query = request.query_params
    errors: dict[str, str] = {}
    status = query.get("status")
    if status is not None and status not in _STATUSES:
        errors["status"] = "Must be one of " + ", ".join(_STATUSES)
    project_id = query.get("project_id")
    if project_id is not None and not ids.is_valid(ids.PROJECT, project_id):
        errors["project_id"] = f"Expected an id of the form {ids.PROJECT}_<uuid4>"
    search = query.get("search")
    if search is not None and len(search) > 200:
        errors["search"] = "At most 200 characters"
    page = page_request(query, repository.SORTABLE, "-created_at", errors, tiebreak="a.id")
    where = repository.AgentFilter(
        owner_id=None if user.is_admin else user.user_id,
        status=status,
        project_id=project_id,
        search=contains_pattern(search) if search else None,
    )
    rows, total = await repository.list_page(pool, where, page.order_by, page.per_page, page.offset)
    return page_of([to_wire(row) for row in rows], page, total)


@get("/api/v1/agents/{agent_id:str}")
async def get_agent(
    agent_id: FromPath[str], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> Agent:
    checked_id(ids.AGENT, agent_id, "agent_id")
    row = await repository.by_id(pool, agent_id)
    if row is None or not may_read(user, row):
        raise not_found("Agent", agent_id=agent_id)
    return to_wire(row)


handlers = [create_agent, list_agents, get_agent]
