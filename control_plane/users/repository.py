"""SQL of the users domain."""

from dataclasses import dataclass
from datetime import datetime

from control_plane.lib.db import Executor


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    email: str
    name: str
    role: str
    status: str
    password_hash: str
    created_at: datetime
    updated_at: datetime


_COLUMNS = "id, email, name, role, status, password_hash, created_at, updated_at"


async def by_email(conn: Executor, email: str) -> UserRow | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM users WHERE lower(email) = lower($1) AND status <> 'deleted'",
        email,
    )
    return UserRow(**row) if row else None


async def by_id(conn: Executor, user_id: str) -> UserRow | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE id = $1", user_id)
    return UserRow(**row) if row else None


async def insert_if_absent(
    conn: Executor,
    *,
    user_id: str,
    email: str,
    name: str,
    role: str,
    password_hash: str,
) -> bool:
    """Insert unless a live user has this email; True when inserted. Replica-safe."""
    status = await conn.execute(
        "INSERT INTO users (id, email, name, role, password_hash) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (lower(email)) WHERE status <> 'deleted' DO NOTHING",
        user_id,
        email,
        name,
        role,
        password_hash,
    )
    return bool(status == "INSERT 0 1")
