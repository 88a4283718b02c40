"""User management endpoints, admin only. The rules live in :mod:`.service`."""

from typing import Any

import asyncpg
from litestar import Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, RawBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from control_plane.audit.recorder import actor_of
from control_plane.auth.principals import UserPrincipal, require_admin
from control_plane.lib.errors import not_found
from control_plane.lib.filters import SEARCH, OneOf
from control_plane.lib.listing import Listing
from control_plane.lib.pagination import Page, page_of
from control_plane.lib.params import checked_id
from control_plane.realtime import publisher
from control_plane.users import repository, service
from control_plane.users.repository import UserRow
from control_plane.users.schemas import ROLES, PasswordReset, RoleChange, User, UserCreate, UserWithPassword
from iron import ids
from iron.timefmt import iso
from iron.validation import decode

# Deleted users are gone from the API; their rows stay for the audit trail.
_LIST = Listing(
    {"role": OneOf(ROLES), "status": OneOf(("active", "suspended")), "search": SEARCH},
    repository.SORTABLE,
    "-created_at",
)


def to_wire(row: UserRow) -> User:
    return User(
        id=row.id,
        email=row.email,
        name=row.name,
        role=row.role,
        status=row.status,
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
        locked_until=iso(row.lock_ends) if row.lock_ends else None,
    )


def with_password(row: UserRow, password: str | None) -> UserWithPassword:
    return UserWithPassword(
        **{field: getattr(to_wire(row), field) for field in User.__struct_fields__},
        temporary_password=password,
    )


def _admin_on(user: UserPrincipal, user_id: str) -> str:
    """The checked path id, for an admin: the role is checked first, so others learn nothing."""
    require_admin(user)
    return checked_id(ids.USER, user_id, "user_id")


@post("/api/v1/users")
async def create_user(
    request: Request[Any, Any, Any],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> UserWithPassword:
    require_admin(user)
    data = decode(body, UserCreate)
    row, password = await service.create(
        pool,
        actor_of(request, user),
        email=data.email,
        name=data.name,
        role=data.role,
        password=data.password,
    )
    return with_password(row, password)


@get("/api/v1/users", opt=_LIST.doc())
async def list_users(
    request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> Page[User]:
    """Search: email and name."""
    require_admin(user)
    found, page = _LIST.read(request.query_params)
    where = repository.UserFilter(**found)
    rows, total = await repository.list_page(pool, where, page.order_by, page.per_page, page.offset)
    return page_of([to_wire(row) for row in rows], page, total)


@get("/api/v1/users/{user_id:str}")
async def get_user(
    user_id: FromPath[str], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> User:
    row = await repository.by_id(pool, _admin_on(user, user_id))
    if row is None or row.status == "deleted":
        raise not_found("User", user_id=user_id)
    return to_wire(row)


@delete("/api/v1/users/{user_id:str}", status_code=204)
async def delete_user(
    request: Request[Any, Any, Any],
    user_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Response[None]:
    moved = await service.delete(pool, actor_of(request, user), _admin_on(user, user_id))
    feed = publisher.of(request.app.state)
    feed.recheck(user_id)
    for agent_id in moved:
        feed.agent(agent_id, "updated", previous_owner_id=user_id)
    return Response(None, status_code=HTTP_204_NO_CONTENT)


@put("/api/v1/users/{user_id:str}/suspend")
async def suspend_user(
    request: Request[Any, Any, Any],
    user_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> User:
    """Suspension ends the user's sessions; API tokens are refused while it lasts."""
    what = service.Change(status="suspended", end_sessions=True)
    row = await service.change(
        pool, actor_of(request, user), _admin_on(user, user_id), "USER_SUSPENDED", what, verb="suspend"
    )
    publisher.of(request.app.state).recheck(user_id)
    return to_wire(row)


@put("/api/v1/users/{user_id:str}/activate")
async def activate_user(
    request: Request[Any, Any, Any],
    user_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> User:
    """Lifts a suspension, and a lockout after failed logins."""
    what = service.Change(status="active", unlock=True)
    row = await service.change(
        pool, actor_of(request, user), _admin_on(user, user_id), "USER_ACTIVATED", what, verb="activate"
    )
    return to_wire(row)


@put("/api/v1/users/{user_id:str}/role")
async def change_role(
    request: Request[Any, Any, Any],
    user_id: FromPath[str],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> User:
    target = _admin_on(user, user_id)
    data = decode(body, RoleChange)
    what = service.Change(role=data.role)
    row = await service.change(
        pool, actor_of(request, user), target, "USER_ROLE_CHANGED", what, verb="demote"
    )
    publisher.of(request.app.state).recheck(user_id)
    return to_wire(row)


@post("/api/v1/users/{user_id:str}/reset-password", status_code=200)
async def reset_password(
    request: Request[Any, Any, Any],
    user_id: FromPath[str],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> UserWithPassword:
    """An admin-chosen password, or (empty body) one the server picks and returns once."""
    target = _admin_on(user, user_id)
    password = decode(body, PasswordReset).password if body.strip() else None
    row, chosen = await service.reset_password(pool, actor_of(request, user), target, password)
    publisher.of(request.app.state).recheck(user_id)  # the user's sessions ended
    return with_password(row, chosen)


handlers = [
    create_user,
    list_users,
    get_user,
    delete_user,
    suspend_user,
    activate_user,
    change_role,
    reset_password,
]
