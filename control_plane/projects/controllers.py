"""Project endpoints: everyone reads, admins create and update.

Every role sees every project (a project is shared structure, its name no
secret), but its counts and totals cover only the agents the caller may read:
all of them for admins, their own for users and viewers. So nobody learns
from a project what they could not read from its agents.
"""

from dataclasses import replace
from typing import Any

import asyncpg
from litestar import Request, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, RawBody

from control_plane.audit import recorder as audit
from control_plane.auth.principals import UserPrincipal, require_admin
from control_plane.lib.db import Executor
from control_plane.lib.errors import ApiError, conflict, not_found
from control_plane.lib.filters import SEARCH
from control_plane.lib.listing import Listing
from control_plane.lib.pagination import Page, page_of
from control_plane.lib.params import checked_id
from control_plane.projects import repository
from control_plane.projects.repository import ProjectRow
from control_plane.projects.schemas import Project, ProjectCreate, ProjectUpdate
from iron import ids
from iron.money import usd
from iron.timefmt import iso
from iron.validation import decode

_ONE = "/api/v1/projects/{project_id:str}"
_LIST = Listing({"search": SEARCH}, repository.SORTABLE, "name", tiebreak="p.id")


def to_wire(row: ProjectRow) -> Project:
    return Project(
        id=row.id,
        name=row.name,
        description=row.description,
        agent_count=row.agent_count,
        user_count=row.user_count,
        budget=usd(row.budget),
        spent=usd(row.spent),
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
    )


def _scope(user: UserPrincipal) -> str | None:
    """Whose agents a project's figures cover for this user (None: everyone's)."""
    return None if user.is_admin else user.user_id


def _name_taken(name: str) -> ApiError:
    return conflict("A project with this name exists", name=name)


async def _read(conn: Executor, user: UserPrincipal, project_id: str) -> Project:
    row = await repository.by_id(conn, project_id, _scope(user))
    if row is None:
        raise not_found("Project", project_id=project_id)
    return to_wire(row)


@get("/api/v1/projects", opt=_LIST.doc())
async def list_projects(
    request: Request[Any, Any, Any],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Page[Project]:
    """Every project. Search: the name."""
    found, page = _LIST.read(request.query_params)
    rows, total = await repository.list_page(
        pool, _scope(user), found["search"], page.order_by, page.per_page, page.offset
    )
    return page_of([to_wire(row) for row in rows], page, total)


@get(_ONE)
async def get_project(
    project_id: FromPath[str], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> Project:
    checked_id(ids.PROJECT, project_id, "project_id")
    return await _read(pool, user, project_id)


@post("/api/v1/projects")
async def create_project(
    request: Request[Any, Any, Any],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Project:
    require_admin(user)
    data = decode(body, ProjectCreate)
    project_id = ids.new_id(ids.PROJECT)
    async with pool.acquire() as conn, conn.transaction():
        if not await repository.insert(
            conn, project_id=project_id, name=data.name, description=data.description
        ):
            raise _name_taken(data.name)
        await audit.record(
            conn,
            audit.actor_of(request, user),
            "PROJECT_CREATED",
            "project",
            project_id,
            metadata={"name": data.name, "description": data.description},
        )
        return await _read(conn, user, project_id)


@put(_ONE)
async def update_project(
    request: Request[Any, Any, Any],
    project_id: FromPath[str],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Project:
    """Name and description."""
    require_admin(user)
    checked_id(ids.PROJECT, project_id, "project_id")
    changes = decode(body, ProjectUpdate).given()
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.lock(conn, project_id)
        if row is None:
            raise not_found("Project", project_id=project_id)
        if not await repository.update(conn, replace(row, **changes)):
            raise _name_taken(changes["name"])
        await audit.record(
            conn,
            audit.actor_of(request, user),
            "PROJECT_UPDATED",
            "project",
            project_id,
            before={field: getattr(row, field) for field in changes},
            after=changes,
        )
        return await _read(conn, user, project_id)


handlers = [list_projects, get_project, create_project, update_project]
