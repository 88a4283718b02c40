"""SQL of sessions: refresh tokens (stored hashed)."""

from datetime import datetime

from control_plane.lib.db import Executor


async def insert_refresh_token(conn: Executor, token_hash: bytes, user_id: str, expires_at: datetime) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
        token_hash,
        user_id,
        expires_at,
    )
