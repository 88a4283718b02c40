"""SQL of sessions: refresh tokens (stored hashed)."""

from datetime import datetime

import asyncpg


async def insert_refresh_token(
    conn: asyncpg.Pool | asyncpg.Connection, token_hash: bytes, user_id: str, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
        token_hash,
        user_id,
        expires_at,
    )
