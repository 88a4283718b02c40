"""User rules that are not a single SQL statement.

Every change runs in one transaction with its audit entry. Changes that could take
admin rights away are serialised (see :func:`repository.lock_admin_changes`) so
that there is always an active admin left, and no admin can remove their own.
"""

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from control_plane.api_tokens import repository as api_tokens
from control_plane.audit import recorder as audit
from control_plane.audit.recorder import Actor
from control_plane.auth import repository as sessions
from control_plane.auth.secrets import hash_password, new_password
from control_plane.lib.db import Conn
from control_plane.lib.errors import conflict, not_found, permission_denied
from control_plane.users import repository
from control_plane.users.repository import UserRow
from iron import ids
from iron.timefmt import iso

log = logging.getLogger("iron.control_plane")


async def ensure_bootstrap_admin(pool: asyncpg.Pool, email: str, password: str) -> None:
    """Create the first admin from the environment, once; later starts leave it alone."""
    if await repository.by_email(pool, email):
        return
    created = await repository.insert_if_absent(
        pool,
        user_id=ids.new_id(ids.USER),
        email=email,
        name="Administrator",
        role="admin",
        password_hash=await hash_password(password),
    )
    if created:
        log.info("bootstrap admin created")


@dataclass(frozen=True, slots=True)
class Change:
    """What an admin changes about a user; None leaves a field as it is."""

    status: str | None = None
    role: str | None = None
    password_hash: str | None = None
    end_sessions: bool = False  # sign the user out everywhere
    unlock: bool = False  # forget failed logins and lift a lockout

    def changes_nothing(self, user: UserRow) -> bool:
        return (
            self.password_hash is None
            and self.status in (None, user.status)
            and self.role in (None, user.role)
            and not (self.unlock and user.lock_ends)
        )


async def create(
    pool: asyncpg.Pool, actor: Actor, *, email: str, name: str, role: str, password: str | None
) -> tuple[UserRow, str | None]:
    """The new user, and the password the server picked when the admin gave none."""
    chosen = password or new_password()
    password_hash = await hash_password(chosen)
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.insert_if_absent(
            conn, user_id=ids.new_id(ids.USER), email=email, name=name, role=role, password_hash=password_hash
        )
        if row is None:
            raise conflict("A user with this email exists", email=email)
        await audit.record(
            conn, actor, "USER_CREATED", "user", row.id, metadata={"email": email, "name": name, "role": role}
        )
    return row, None if password else chosen


async def change(
    pool: asyncpg.Pool,
    actor: Actor,
    user_id: str,
    operation: str,
    what: Change,
    *,
    verb: str,
    metadata: dict[str, Any] | None = None,
) -> UserRow:
    """Apply ``what``; a change that changes nothing is no mutation, and leaves no audit entry."""
    async with pool.acquire() as conn, conn.transaction():
        before = await _target(conn, actor, user_id, what, verb)
        if what.changes_nothing(before):
            return before
        after = await repository.update(
            conn,
            user_id,
            status=what.status,
            role=what.role,
            password_hash=what.password_hash,
            end_sessions=what.end_sessions,
            unlock=what.unlock,
        )
        if what.end_sessions:
            metadata = {
                **(metadata or {}),
                "sessions_ended": await sessions.revoke_user_sessions(conn, user_id),
            }
        old, new = _visible(before), _visible(after)
        changed = [key for key in old if old[key] != new[key]]
        await audit.record(
            conn,
            actor,
            operation,
            "user",
            user_id,
            before={key: old[key] for key in changed} if changed else None,
            after={key: new[key] for key in changed} if changed else None,
            metadata=metadata,
        )
    return after


async def reset_password(
    pool: asyncpg.Pool, actor: Actor, user_id: str, password: str | None
) -> tuple[UserRow, str | None]:
    """Set a new password, end every session and lift a lockout; returns the password the
    server picked when the admin gave none."""
    chosen = password or new_password()
    what = Change(password_hash=await hash_password(chosen), end_sessions=True, unlock=True)
    row = await change(
        pool, actor, user_id, "USER_PASSWORD_RESET", what, verb="reset", metadata={"generated": not password}
    )
    return row, None if password else chosen


async def delete(pool: asyncpg.Pool, actor: Actor, user_id: str) -> list[str]:
    """Soft-delete: the row stays for the audit trail and the email is free again. The acting
    admin takes over the user's agents (their ids are returned); pending budget requests are
    cancelled, API tokens revoked and sessions ended, all with the deletion."""
    new_owner = actor.user_id
    assert new_owner is not None, "a deletion is an admin's request"
    async with pool.acquire() as conn, conn.transaction():
        await _target(conn, actor, user_id, Change(status="deleted"), "delete")
        await repository.update(conn, user_id, status="deleted", end_sessions=True)
        handover = await repository.hand_over(conn, user_id, new_owner)
        metadata = {
            "agents_reassigned": len(handover.agents_reassigned),
            "agents_reassigned_to": new_owner,
            "budget_requests_cancelled": handover.budget_requests_cancelled,
            # the key avoids the word "token": the recorder would redact the count
            "api_access_revoked": await api_tokens.revoke_all_of(conn, user_id),
            "sessions_ended": await sessions.revoke_user_sessions(conn, user_id),
        }
        await audit.record(conn, actor, "USER_DELETED", "user", user_id, metadata=metadata)
    return handover.agents_reassigned


async def _target(conn: Conn, actor: Actor, user_id: str, what: Change, verb: str) -> UserRow:
    """The live user, locked; refuses to take away the actor's own admin rights or the last ones."""
    await repository.lock_admin_changes(conn)
    user = await repository.live_for_update(conn, user_id)
    if user is None:
        raise not_found("User", user_id=user_id)
    active_admin = user.role == "admin" and user.status == "active"
    stays_admin = (what.role or user.role) == "admin" and (what.status or user.status) == "active"
    if active_admin and not stays_admin:
        if user.id == actor.user_id:
            raise permission_denied(f"You cannot {verb} yourself")
        if not await repository.other_active_admins(conn, user.id):
            raise conflict(f"Cannot {verb} the last active admin")
    return user


def _visible(user: UserRow) -> dict[str, Any]:
    return {
        "role": user.role,
        "status": user.status,
        "locked_until": iso(user.lock_ends) if user.lock_ends else None,
    }
