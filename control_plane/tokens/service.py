"""IC token changes, shared by both families of endpoints (per agent and ``/api/v1/tokens``).

Each runs in the caller's transaction, after the caller locked the agent's row
(:func:`control_plane.agents.service.manageable`): changes of one agent's token
queue on that lock, so there is never more than one live token per agent, and
a rotation or revocation takes effect for every later request at once. Each
writes exactly one audit entry; no entry carries a token's value.
"""

from control_plane.audit import recorder as audit
from control_plane.lib.db import Conn
from control_plane.lib.errors import conflict, not_found
from control_plane.tokens import repository
from control_plane.tokens.repository import IssuedToken, TokenRow

RESOURCE = "ic_token"


def _must_be_live(live: TokenRow | None, token_id: str) -> None:
    if live is None or live.id != token_id:
        raise conflict("The IC token is already revoked", token_id=token_id)


async def create(conn: Conn, actor: audit.Actor, agent_id: str) -> IssuedToken:
    """A token for an agent that has none live; 409 if it has one."""
    live = await repository.live_for_agent(conn, agent_id)
    if live is not None:
        raise conflict("IC token already exists for agent", agent_id=agent_id, existing_token_id=live.id)
    token = await repository.insert(conn, agent_id)
    await audit.record(conn, actor, "IC_TOKEN_CREATED", RESOURCE, token.id, metadata={"agent_id": agent_id})
    return token


async def rotate(conn: Conn, actor: audit.Actor, agent_id: str, token_id: str | None = None) -> IssuedToken:
    """Replace the agent's live token (if any) with a new one.

    ``token_id``: the token the caller means to rotate; 409 unless it is still the live one.
    """
    live = await repository.live_for_agent(conn, agent_id)
    if token_id is not None:
        _must_be_live(live, token_id)
    token = await repository.issue(conn, agent_id)
    await audit.record(
        conn,
        actor,
        "IC_TOKEN_REGENERATED",
        RESOURCE,
        token.id,
        metadata={"agent_id": agent_id, "replaced": live.id if live else None},
    )
    return token


async def revoke(conn: Conn, actor: audit.Actor, agent_id: str, token_id: str | None = None) -> None:
    """Revoke the agent's live token: 404 if it has none; with ``token_id``, 409 unless that one is live."""
    live = await repository.live_for_agent(conn, agent_id)
    if token_id is not None:
        _must_be_live(live, token_id)
    if live is None:
        raise not_found("IC token", agent_id=agent_id)
    await repository.revoke_for_agent(conn, agent_id)
    await audit.record(conn, actor, "IC_TOKEN_REVOKED", RESOURCE, live.id, metadata={"agent_id": agent_id})
