"""Who may do what to an agent, and the agent operations that span domains.

Reads: admins read every agent, users and viewers their own; an agent someone
may not read is 404 to them, as if it did not exist. Changes: admins and the
owning user; a viewer is refused (403) on an agent it can read. Every change
locks the agent's row first (the ledger's lock order), so it is serialised with
the budget protocol and with other changes of the same agent.
"""

from dataclasses import dataclass
from typing import Protocol

from control_plane.agents import repository
from control_plane.agents.repository import AgentRow
from control_plane.auth.principals import UserPrincipal
from control_plane.budget import ledger
from control_plane.budget import repository as budget_repo
from control_plane.lib.db import Conn, Executor
from control_plane.lib.errors import not_found, permission_denied, validation_error
from control_plane.lib.params import checked_id
from control_plane.projects import repository as projects
from control_plane.providers import repository as providers
from control_plane.requests import repository as budget_requests
from control_plane.tokens import repository as ic_tokens
from control_plane.users import repository as users
from iron import ids

# The budget domain's "open leases expired by then", asked for the end of time: every open lease.


class Owned(Protocol):
    """An agent, or something that hangs off one, with the agent's owner."""

    @property
    def owner_id(self) -> str: ...


def may_read(user: UserPrincipal, row: Owned) -> bool:
    return user.is_admin or row.owner_id == user.user_id


def _visible(user: UserPrincipal, agent_id: str, row: AgentRow | None) -> AgentRow:
    if row is None or not may_read(user, row):
        raise not_found("Agent", agent_id=agent_id)
    return row


async def readable(conn: Executor, user: UserPrincipal, agent_id: str) -> AgentRow:
    checked_id(ids.AGENT, agent_id, "agent_id")
    return _visible(user, agent_id, await repository.by_id(conn, agent_id))


async def manageable(conn: Conn, user: UserPrincipal, agent_id: str) -> AgentRow:
    """The agent, locked for a change by this user: call inside the change's transaction."""
    checked_id(ids.AGENT, agent_id, "agent_id")
    row = _visible(user, agent_id, await repository.lock(conn, agent_id))
    if user.role == "viewer":
        raise permission_denied("Viewers cannot change agents")
    return row


async def check_owner(conn: Conn, user: UserPrincipal, owner_id: str | None) -> None:
    """A new owner (None: unchanged) is an admin's choice, of a user that is not deleted; they stay
    so until the transaction ends (a deletion hands agents over: it must see this one)."""
    if owner_id is None:
        return
    if not user.is_admin:
        raise permission_denied("Only admins can give an agent to another owner")
    if not await users.lock_live(conn, owner_id):
        raise validation_error({"owner_id": "Unknown user"})


async def check_references(
    conn: Conn, provider_ids: list[str] | None = None, project_id: str | None = None
) -> None:
    """400 naming every provider and the project (None: not given) that does not exist.

    In a transaction, the providers found cannot be deleted until it ends.
    """
    errors: dict[str, str] = {}
    if provider_ids is not None:
        known = await providers.existing_ids(conn, provider_ids)
        errors.update(
            (f"providers[{index}]", "Unknown provider")
            for index, provider_id in enumerate(provider_ids)
            if provider_id not in known
        )
        if len(set(provider_ids)) != len(provider_ids):
            errors["providers"] = "Providers must be distinct"
    if project_id is not None and not await projects.exists(conn, project_id):
        errors["project_id"] = "Unknown project"
    if errors:
        raise validation_error(errors)


@dataclass(frozen=True, slots=True)
class Deleted:
    ic_token_revoked: bool
    leases_closed: int
    returned: int  # micros that left outstanding
    budget_requests_cancelled: list[str]


async def delete(conn: Conn, agent: AgentRow) -> Deleted:
    """Soft-delete an agent locked by :func:`manageable`.

    Its IC token stops working, its open leases close and their unused grant
    leaves ``outstanding`` (usage already reported stays spent), and its
    pending budget requests are cancelled: none of them could ever be used.
    """
    returned = 0
    leases = await budget_repo.open_leases(conn, agent.id)
    for lease in leases:
        unused = ledger.unused(lease.granted, lease.spent)
        await budget_repo.close_lease(conn, lease, "closed", unused)
        returned += unused
    revoked = await ic_tokens.revoke_for_agent(conn, agent.id)
    cancelled = await budget_requests.cancel_pending(conn, agent_id=agent.id)
    await repository.mark_deleted(conn, agent.id)
    return Deleted(revoked, len(leases), returned, cancelled)
