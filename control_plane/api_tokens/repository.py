"""SQL of API tokens. Only SHA-256 hashes are stored; a value is shown once, at creation."""

from control_plane.auth.secrets import token_hash
from control_plane.lib.db import Executor


async def owner(conn: Executor, token: str) -> str | None:
    """The user of a live token (not revoked, not expired), or None."""
    user_id: str | None = await conn.fetchval(
        "SELECT user_id FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > now())",
        token_hash(token),
    )
    return user_id
