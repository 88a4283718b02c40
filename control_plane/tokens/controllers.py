"""Per-agent IC token endpoints. A new token invalidates the old one in the same transaction."""

from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, delete, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.status_codes import HTTP_204_NO_CONTENT

from control_plane.agents import repository as agents
from control_plane.agents.schemas import IcTokenIssued
from control_plane.audit import recorder as audit
from control_plane.auth.principals import UserPrincipal
from control_plane.lib.errors import not_found, permission_denied
from control_plane.lib.params import checked_id
from control_plane.tokens import repository
from iron import ids
from iron.timefmt import iso


class IcTokenRegenerated(msgspec.Struct, kw_only=True):
    agent_id: str
    ic_token: IcTokenIssued
    old_token_invalidated: bool


async def _owned_agent(pool: asyncpg.Pool, user: UserPrincipal, agent_id: str) -> None:
    """Admins manage every agent's token, users their own; viewers none."""
    checked_id(ids.AGENT, agent_id, "agent_id")
    agent = await agents.by_id(pool, agent_id)
    if agent is None or not (user.is_admin or agent.owner_id == user.user_id):
        raise not_found("Agent", agent_id=agent_id)
    if user.role == "viewer":
        raise permission_denied("Viewers cannot manage IC tokens")


@post("/api/v1/agents/{agent_id:str}/ic-token/regenerate", status_code=200)
async def regenerate_ic_token(
    request: Request[Any, Any, Any],
    agent_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> IcTokenRegenerated:
    await _owned_agent(pool, user, agent_id)
    async with pool.acquire() as conn, conn.transaction():
        token = await repository.issue(conn, agent_id)
        await audit.record(
            conn,
            audit.actor_of(request, user),
            "IC_TOKEN_REGENERATED",
            "agent",
            agent_id,
            metadata={"ic_token_id": token.id},
        )
    return IcTokenRegenerated(
        agent_id=agent_id,
        ic_token=IcTokenIssued(id=token.id, token=token.token, created_at=iso(token.created_at)),
        old_token_invalidated=True,
    )


@delete("/api/v1/agents/{agent_id:str}/ic-token", status_code=204)
async def revoke_ic_token(
    request: Request[Any, Any, Any],
    agent_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Response[None]:
    await _owned_agent(pool, user, agent_id)
    async with pool.acquire() as conn, conn.transaction():
        if not await repository.revoke_for_agent(conn, agent_id):
            raise not_found("IC token", agent_id=agent_id)
        await audit.record(conn, audit.actor_of(request, user), "IC_TOKEN_REVOKED", "agent", agent_id)
    return Response(None, status_code=HTTP_204_NO_CONTENT)


handlers = [regenerate_ic_token, revoke_ic_token]
