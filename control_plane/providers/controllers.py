"""Provider endpoints (admin writes)."""

from typing import Any

import asyncpg
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import RawBody

from control_plane.audit import recorder as audit
from control_plane.auth.principals import UserPrincipal, require_admin
from control_plane.lib.errors import conflict
from control_plane.providers import repository
from control_plane.providers.repository import ProviderRow
from control_plane.providers.schemas import Provider, ProviderCreate
from iron import ids
from iron.crypto import seal
from iron.timefmt import iso
from iron.validation import decode


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
    sealed = seal(
        request.app.state.settings.master_key,
        data.credentials.api_key.encode(),
        provider_id.encode(),
    )
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.insert(
            conn,
            provider_id=provider_id,
            name=data.name,
            type_=data.type,
            endpoint=data.endpoint,
            models=data.models,
            key_ciphertext=sealed,
        )
        if row is None:
            raise conflict("A provider with this name exists", name=data.name)
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


handlers = [create_provider]
