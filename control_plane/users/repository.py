"""SQL of the users domain."""

from dataclasses import dataclass
from datetime import datetime

from control_plane.lib.db import Conn, Executor
from control_plane.requests import repository as budget_requests
from iron.timefmt import utcnow

# Taken by every change that may take admin rights away, so that two such changes
# (say, two admins demoting each other) cannot both see "another admin remains".
_ADMIN_CHANGES_LOCK = 0x1C0_AD31


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    email: str
    name: str
    role: str
    status: str
    password_hash: str
    failed_logins: int
    locked_until: datetime | None
    token_generation: int
    created_at: datetime
    updated_at: datetime

    @property
    def lock_ends(self) -> datetime | None:
        """When the current lockout ends; None when the user is not locked out."""
        return self.locked_until if self.locked_until and self.locked_until > utcnow() else None


_COLUMNS = (
    "id, email, name, role, status, password_hash, failed_logins, locked_until, token_generation,"
    " created_at, updated_at"
)


async def by_email(conn: Executor, email: str) -> UserRow | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM users WHERE lower(email) = lower($1) AND status <> 'deleted'",
        email,
    )
    return UserRow(**row) if row else None


async def by_id(conn: Executor, user_id: str) -> UserRow | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE id = $1", user_id)
    return UserRow(**row) if row else None


async def lock_live(conn: Conn, user_id: str) -> bool:
    """Whether the user exists and is not deleted; if so, not deleted before the transaction ends."""
    found = await conn.fetchval(
        "SELECT 1 FROM users WHERE id = $1 AND status <> 'deleted' FOR SHARE", user_id
    )
    return found is not None


async def live_for_update(conn: Conn, user_id: str) -> UserRow | None:
    """The user unless deleted, row-locked until the end of the transaction."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM users WHERE id = $1 AND status <> 'deleted' FOR UPDATE", user_id
    )
    return UserRow(**row) if row else None


async def insert_if_absent(
    conn: Executor,
    *,
    user_id: str,
    email: str,
    name: str,
    role: str,
    password_hash: str,
) -> UserRow | None:
    """Insert unless a live user has this email; the new row, or None. Replica-safe."""
    row = await conn.fetchrow(
        "INSERT INTO users (id, email, name, role, password_hash) VALUES ($1, $2, $3, $4, $5)"
        f" ON CONFLICT (lower(email)) WHERE status <> 'deleted' DO NOTHING RETURNING {_COLUMNS}",
        user_id,
        email,
        name,
        role,
        password_hash,
    )
    return UserRow(**row) if row else None


@dataclass(frozen=True, slots=True)
class UserFilter:
    role: str | None = None
    status: str | None = None
    search: str | None = None  # an ILIKE pattern, on email and name


SORTABLE = {"email": "lower(email)", "name": "lower(name)", "created_at": "created_at", "role": "role"}


async def list_page(
    conn: Executor, where: UserFilter, order_by: str, limit: int, offset: int
) -> tuple[list[UserRow], int]:
    """One page of live users and the total; ``order_by`` comes from :data:`SORTABLE` only."""
    condition = (
        "status <> 'deleted' AND ($1::text IS NULL OR role = $1) AND ($2::text IS NULL OR status = $2)"
        " AND ($3::text IS NULL OR email ILIKE $3 OR name ILIKE $3)"
    )
    args = (where.role, where.status, where.search)
    total = await conn.fetchval(f"SELECT count(*) FROM users WHERE {condition}", *args)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM users WHERE {condition} ORDER BY {order_by} LIMIT $4 OFFSET $5",
        *args,
        limit,
        offset,
    )
    return [UserRow(**row) for row in rows], int(total)


async def update(
    conn: Executor,
    user_id: str,
    *,
    status: str | None = None,
    role: str | None = None,
    password_hash: str | None = None,
    end_sessions: bool = False,
    unlock: bool = False,
) -> UserRow:
    """Change what is given; ``end_sessions`` makes every access token issued so far stale."""
    row = await conn.fetchrow(
        "UPDATE users SET status = coalesce($2, status), role = coalesce($3, role),"
        " password_hash = coalesce($4, password_hash),"
        " token_generation = token_generation + CASE WHEN $5 THEN 1 ELSE 0 END,"
        " failed_logins = CASE WHEN $6 THEN 0 ELSE failed_logins END,"
        " locked_until = CASE WHEN $6 THEN NULL ELSE locked_until END, updated_at = now()"
        f" WHERE id = $1 RETURNING {_COLUMNS}",
        user_id,
        status,
        role,
        password_hash,
        end_sessions,
        unlock,
    )
    assert row is not None, "update() is called on a row locked by live_for_update()"
    return UserRow(**row)


async def lock_admin_changes(conn: Conn) -> None:
    """Serialise the changes that may take admin rights away, until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _ADMIN_CHANGES_LOCK)


async def other_active_admins(conn: Executor, user_id: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM users WHERE role = 'admin' AND status = 'active' AND id <> $1", user_id
    )
    return count


@dataclass(frozen=True, slots=True)
class Handover:
    agents_reassigned: list[str]  # their ids
    budget_requests_cancelled: int


async def hand_over(conn: Conn, user_id: str, new_owner_id: str) -> Handover:
    """What a deleted user leaves behind: live agents go to ``new_owner_id``, pending requests end.

    Agents are locked before requests, the order the budget-request approval uses too.
    """
    agents: list[str] = await conn.fetchval(
        "WITH moved AS (UPDATE agents SET owner_id = $2, updated_at = now()"
        " WHERE owner_id = $1 AND status <> 'deleted' RETURNING id)"
        " SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM moved",
        user_id,
        new_owner_id,
    )
    cancelled = await budget_requests.cancel_pending(conn, requester_id=user_id)
    return Handover(agents, len(cancelled))


async def record_failed_login(conn: Executor, user_id: str, threshold: int, lock_s: int) -> bool:
    """Count a wrong password; the ``threshold``-th in a row locks the account for ``lock_s``.
    True when this failure locked it.

    One statement, so concurrent failures cannot lose a count. The count restarts at the lock,
    so once it lifts the user has ``threshold`` tries again. A locked account counts nothing.
    """
    locked: bool | None = await conn.fetchval(
        "UPDATE users SET"
        " locked_until = CASE WHEN failed_logins + 1 >= $2"
        "  THEN now() + make_interval(secs => $3) ELSE locked_until END,"
        " failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END"
        " WHERE id = $1 AND (locked_until IS NULL OR locked_until <= now())"
        " RETURNING coalesce(locked_until > now(), false)",
        user_id,
        threshold,
        lock_s,
    )
    return bool(locked)


async def clear_failed_logins(conn: Executor, user_id: str) -> None:
    await conn.execute(
        "UPDATE users SET failed_logins = 0, locked_until = NULL"
        " WHERE id = $1 AND (failed_logins <> 0 OR locked_until IS NOT NULL)",
        user_id,
    )
