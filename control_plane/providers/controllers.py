"""Provider endpoints: everyone reads, admins write. A key goes in sealed and never comes out.

A provider's usage is what runtimes reported under its type or its name
(``usage_events.provider`` is a free-text label, so calls cannot be tied to
one provider row after the fact): two providers of one type share the calls
labelled with that type. Admins see usage over every agent, others over
their own agents only.
"""

from dataclasses import replace
from typing import Any, get_args

import asyncpg
import msgspec
from litestar import Request, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, RawBody

from control_plane.audit import recorder as audit
from control_plane.auth.principals import UserPrincipal, require_admin
from control_plane.lib.errors import ApiError, conflict, not_found
from control_plane.lib.filters import SEARCH, OneOf
from control_plane.lib.listing import Listing
from control_plane.lib.pagination import Page, page_of
from control_plane.lib.params import checked_id
from control_plane.providers import repository
from control_plane.providers.repository import ProviderRow
from control_plane.providers.schemas import (
    Provider,
    ProviderCreate,
    ProviderDeleted,
    ProviderDetail,
    ProviderStatus,
    ProviderType,
    ProviderUpdate,
    ProviderUsage,
)
from iron import ids
from iron.crypto import seal
from iron.money import usd
from iron.timefmt import iso
from iron.validation import decode

_ONE = "/api/v1/providers/{provider_id:str}"
_LIST = Listing(
    {"type": OneOf(get_args(ProviderType)), "status": OneOf(get_args(ProviderStatus)), "search": SEARCH},
    repository.SORTABLE,
    "name",
)


def to_wire(row: ProviderRow) -> Provider:
    return Provider(
        id=row.id,
        name=row.name,
        type=row.type,
        endpoint=row.endpoint,
        models=list(row.models),
        credentials_configured=True,
        status=row.status,
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
    )


def _sealed_key(request: Request[Any, Any, Any], provider_id: str, api_key: str) -> bytes:
    """The key under the master key, bound to this provider (AAD = its id)."""
    return seal(request.app.state.settings.master_key, api_key.encode(), provider_id.encode())


def _name_taken(name: str) -> ApiError:
    return conflict("A provider with this name exists", name=name)


@post("/api/v1/providers")
async def create_provider(
    request: Request[Any, Any, Any],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Provider:
    require_admin(user)
    data = decode(body, ProviderCreate)
    provider_id = ids.new_id(ids.PROVIDER)
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.insert(
            conn,
            provider_id=provider_id,
            name=data.name,
            type_=data.type,
            endpoint=data.endpoint,
            models=data.models,
            key_ciphertext=_sealed_key(request, provider_id, data.credentials.api_key),
        )
        if row is None:
            raise _name_taken(data.name)
        created = to_wire(row)
        await audit.record(
            conn,
            audit.actor_of(request, user),
            "PROVIDER_CREATED",
            "provider",
            row.id,
            metadata={"name": row.name, "type": row.type, "endpoint": row.endpoint},
        )
    return created


@get("/api/v1/providers", opt=_LIST.doc())
async def list_providers(
    request: Request[Any, Any, Any],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Page[Provider]:
    """Every provider, for every role. Search: the name."""
    found, page = _LIST.read(request.query_params)
    where = repository.ProviderFilter(**found)
    rows, total = await repository.list_page(pool, where, page.order_by, page.per_page, page.offset)
    return page_of([to_wire(row) for row in rows], page, total)


@get(_ONE)
async def get_provider(
    provider_id: FromPath[str], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> ProviderDetail:
    checked_id(ids.PROVIDER, provider_id, "provider_id")
    row = await repository.by_id(pool, provider_id)
    if row is None:
        raise not_found("Provider", provider_id=provider_id)
    usage = await repository.usage(pool, row, None if user.is_admin else user.user_id)
    return ProviderDetail(
        **msgspec.structs.asdict(to_wire(row)),
        usage=ProviderUsage(
            requests=usage.requests,
            spent=usd(usage.spent),
            agents=usage.agents,
            last_request_at=iso(usage.last_request_at) if usage.last_request_at else None,
        ),
    )


@put(_ONE)
async def update_provider(
    request: Request[Any, Any, Any],
    provider_id: FromPath[str],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Provider:
    """Any of name, type, endpoint, models, status; ``credentials.api_key`` replaces the key."""
    require_admin(user)
    checked_id(ids.PROVIDER, provider_id, "provider_id")
    changes = decode(body, ProviderUpdate).given()
    credentials = changes.pop("credentials", None)
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.lock(conn, provider_id)
        if row is None:
            raise not_found("Provider", provider_id=provider_id)
        key = _sealed_key(request, provider_id, credentials.api_key) if credentials else None
        updated = await repository.update(conn, replace(row, **changes), key)
        if updated is None:
            raise _name_taken(changes["name"])
        await audit.record(
            conn,
            audit.actor_of(request, user),
            "PROVIDER_UPDATED",
            "provider",
            provider_id,
            before={field: getattr(row, field) for field in changes},
            after=changes,
            metadata={"key_replaced": credentials is not None},
        )
    return to_wire(updated)


@delete(_ONE, status_code=200)
async def delete_provider(
    request: Request[Any, Any, Any],
    provider_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> ProviderDeleted:
    """Delete it and its assignments; the answer lists the agents that lost it."""
    require_admin(user)
    checked_id(ids.PROVIDER, provider_id, "provider_id")
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.lock(conn, provider_id)
        if row is None:
            raise not_found("Provider", provider_id=provider_id)
        affected = await repository.delete(conn, provider_id)
        await audit.record(
            conn,
            audit.actor_of(request, user),
            "PROVIDER_DELETED",
            "provider",
            provider_id,
            before={"name": row.name, "type": row.type, "endpoint": row.endpoint, "status": row.status},
            metadata={"affected_agents": affected},
        )
    return ProviderDeleted(id=provider_id, deleted=True, affected_agents=affected)


handlers = [create_provider, list_providers, get_provider, update_provider, delete_provider]
