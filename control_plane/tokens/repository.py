"""SQL of IC tokens. Only SHA-256 hashes are stored; a value is shown once, at creation."""

from dataclasses import dataclass
from datetime import datetime

from control_plane.auth.secrets import new_token, token_hash
from control_plane.lib.db import Conn, Executor
from iron import ids


@dataclass(frozen=True, slots=True)
class IssuedToken:
    id: str
    token: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TokenOwner:
    token_id: str
    agent_id: str


async def issue(conn: Conn, agent_id: str) -> IssuedToken:
    """Revoke the agent's live token, if any, and issue a new one: call inside a transaction."""
    await conn.execute(
        "UPDATE ic_tokens SET revoked_at = now() WHERE agent_id = $1 AND revoked_at IS NULL",
        agent_id,
    )
    token_id, token = ids.new_id(ids.IC_TOKEN), new_token(ids.IC_TOKEN)
    created_at = await conn.fetchval(
        "INSERT INTO ic_tokens (id, agent_id, token_hash) VALUES ($1, $2, $3) RETURNING created_at",
        token_id,
        agent_id,
        token_hash(token),
    )
    return IssuedToken(token_id, token, created_at)


async def revoke_for_agent(conn: Executor, agent_id: str) -> bool:
    status = await conn.execute(
        "UPDATE ic_tokens SET revoked_at = now() WHERE agent_id = $1 AND revoked_at IS NULL",
        agent_id,
    )
    return bool(status != "UPDATE 0")


async def owner(conn: Executor, token: str) -> TokenOwner | None:
    """The live token's agent, if the agent is live too."""
    row = await conn.fetchrow(
        "SELECT t.id, t.agent_id FROM ic_tokens t JOIN agents a ON a.id = t.agent_id"
        " WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND a.status = 'active'",
        token_hash(token),
    )
    return TokenOwner(row["id"], row["agent_id"]) if row else None
