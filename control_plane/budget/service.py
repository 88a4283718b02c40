"""Ledger operations: each one transaction that locks the agent's row first.

Amounts are decided by :mod:`control_plane.budget.ledger`; SQL lives in
:mod:`control_plane.budget.repository`. Correct under any concurrency and
across control-plane processes, because every change to an agent's money
happens under ``SELECT ... FOR UPDATE`` of that agent.
"""

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import asyncpg

from control_plane.analytics import repository as usage
from control_plane.analytics.repository import UsageRow
from control_plane.budget import ledger
from control_plane.budget import repository as repo
from control_plane.budget.repository import AgentLedger, LeaseRow
from control_plane.lib.db import Conn
from control_plane.lib.errors import ApiError, conflict, not_found, validation_error
from control_plane.realtime.publisher import Publisher
from iron import ids
from iron.money import usd
from iron.timefmt import utcnow


@dataclass(frozen=True, slots=True)
class Granted:
    lease: LeaseRow
    granted: int
    available: int


@dataclass(frozen=True, slots=True)
class Charged:
    accepted: int
    duplicates: int
    lease: LeaseRow
    ledger: AgentLedger  # after the charge
    before: AgentLedger
    new: list[UsageRow]  # the events that were new, charged once each


@dataclass(frozen=True, slots=True)
class Returned:
    returned: int
    available: int


def budget_exhausted(state: AgentLedger) -> ApiError:
    return ApiError(
        403,
        "BUDGET_EXHAUSTED",
        "Agent budget exhausted",
        details={
            "agent_id": state.agent_id,
            "budget_allocated": usd(state.budget),
            "budget_spent": usd(state.spent),
            "budget_outstanding": usd(state.outstanding),
            "budget_remaining": usd(max(ledger.available(state.budget, state.spent, state.outstanding), 0)),
        },
    )


async def _locked_agent(conn: Conn, agent_id: str) -> AgentLedger:
    state = await repo.lock_agent(conn, agent_id)
    if state is None or not state.active:
        raise not_found("Agent", agent_id=agent_id)
    return state


async def _locked_lease(conn: Conn, lease_id: str, agent_id: str) -> LeaseRow:
    lease = await repo.lock_lease(conn, lease_id, agent_id)
    if lease is None:
        raise not_found("Lease", lease_id=lease_id)
    return lease


@contextlib.contextmanager
def _refusal_published(
    publisher: Publisher | None, agent_id: str, lease_id: str | None, asked: int
) -> Iterator[None]:
    """Publish a grant refused for want of budget, once its transaction rolled back."""
    try:
        yield
    except ApiError as exc:
        if publisher is not None and exc.code == "BUDGET_EXHAUSTED":
            publisher.lease(agent_id, "refused", lease_id, asked)
        raise


async def handshake(
    pool: asyncpg.Pool,
    agent_id: str,
    requested: int,
    holder: str | None,
    ttl_s: int,
    publisher: Publisher | None = None,
) -> Granted:
    """Open a lease with ``min(requested, available)``; nothing available is 403."""
    with _refusal_published(publisher, agent_id, None, requested):
        granted = await _handshake(pool, agent_id, requested, holder, ttl_s)
    if publisher is not None:
        publisher.lease(agent_id, "granted", granted.lease.id, granted.granted)
    return granted


async def _handshake(
    pool: asyncpg.Pool, agent_id: str, requested: int, holder: str | None, ttl_s: int
) -> Granted:
    async with pool.acquire() as conn, conn.transaction():
        state = await _locked_agent(conn, agent_id)
        granted = ledger.grant(requested, state.budget, state.spent, state.outstanding)
        if granted == 0:
            raise budget_exhausted(state)
        lease_id, expires_at = ids.new_id(ids.LEASE), utcnow() + timedelta(seconds=ttl_s)
        await repo.open_lease(
            conn,
            lease_id=lease_id,
            agent_id=agent_id,
            holder=holder,
            granted=granted,
            expires_at=expires_at,
        )
        lease = LeaseRow(lease_id, agent_id, holder, granted, 0, "open", expires_at)
        return Granted(
            lease, granted, ledger.available(state.budget, state.spent, state.outstanding + granted)
        )


async def refresh(
    pool: asyncpg.Pool,
    agent_id: str,
    lease_id: str,
    requested: int,
    ttl_s: int,
    publisher: Publisher | None = None,
) -> Granted:
    """Top up an open lease and extend it; ``requested == 0`` only extends (a heartbeat)."""
    with _refusal_published(publisher, agent_id, lease_id, requested):
        granted = await _refresh(pool, agent_id, lease_id, requested, ttl_s)
    if publisher is not None and granted.granted > 0:
        publisher.lease(agent_id, "granted", lease_id, granted.granted)
    return granted


async def _refresh(pool: asyncpg.Pool, agent_id: str, lease_id: str, requested: int, ttl_s: int) -> Granted:
    async with pool.acquire() as conn, conn.transaction():
        state = await _locked_agent(conn, agent_id)
        lease = await _locked_lease(conn, lease_id, agent_id)
        if lease.status != "open":
            raise conflict("Lease is closed; open a new one with a handshake", lease_status=lease.status)
        granted = ledger.grant(requested, state.budget, state.spent, state.outstanding)
        if requested > 0 and granted == 0:
            raise budget_exhausted(state)
        added = ledger.added_by_top_up(lease.granted, lease.spent, granted)
        expires_at = utcnow() + timedelta(seconds=ttl_s)
        lease = await repo.top_up_lease(conn, lease, granted, added, expires_at)
        return Granted(lease, granted, ledger.available(state.budget, state.spent, state.outstanding + added))


async def charge_lease(
    conn: Conn, state: AgentLedger, lease: LeaseRow, cost: int, extend_to: datetime | None
) -> tuple[LeaseRow, AgentLedger]:
    """Charge new usage to a locked lease: ``outstanding`` drops by the part its grant covers, the
    rest is an overdraw; a closed lease covers nothing (and is not extended)."""
    is_open = lease.status == "open"
    released = ledger.released_by_charge(lease.granted, lease.spent, cost) if is_open else 0
    lease = await repo.charge(conn, lease, cost, released, extend_to if is_open else None)
    return lease, replace(state, spent=state.spent + cost, outstanding=state.outstanding - released)


async def charge_usage(conn: Conn, state: AgentLedger, lease: LeaseRow | None, cost: int) -> AgentLedger:
    """Charge new usage that names no lease: to ``lease`` (the agent's open one, locked), or without
    one, all as an overdraw. ``spent`` always grows by ``cost``: usage is never dropped."""
    if cost == 0:
        return state
    if lease is None:
        await repo.charge_overdraw(conn, state.agent_id, cost)
        return replace(state, spent=state.spent + cost)
    return (await charge_lease(conn, state, lease, cost, None))[1]


async def report(
    pool: asyncpg.Pool, agent_id: str, lease_id: str, events: Sequence[UsageRow], ttl_s: int
) -> Charged:
    """Charge the new events once each; duplicates are acknowledged and charged zero times.

    Usage is never refused: a closed lease or an overdraw is still charged. The caller hands
    the new events to analytics' hook (which publishes them) after commit.
    """
    await usage.ensure_partitions(pool, events)
    async with pool.acquire() as conn, conn.transaction():
        state = await repo.lock_agent(conn, agent_id)
        if state is None:
            raise not_found("Agent", agent_id=agent_id)
        lease = await _locked_lease(conn, lease_id, agent_id)
        new = await usage.insert_new(conn, agent_id, lease_id, "budget", events)
        extend_to = utcnow() + timedelta(seconds=ttl_s)
        lease, after = await charge_lease(conn, state, lease, sum(e.cost for e in new), extend_to)
        return Charged(len(new), len(events) - len(new), lease, after, state, new)


async def return_lease(
    pool: asyncpg.Pool, agent_id: str, lease_id: str, publisher: Publisher | None = None
) -> Returned:
    """Close a lease; its unreported remainder goes back. Returning twice returns nothing."""
    async with pool.acquire() as conn, conn.transaction():
        state = await _locked_agent(conn, agent_id)
        lease = await _locked_lease(conn, lease_id, agent_id)
        was_open = lease.status == "open"
        unused = ledger.unused(lease.granted, lease.spent) if was_open else 0
        if was_open:
            await repo.close_lease(conn, lease, "closed", unused)
    if publisher is not None and was_open:
        publisher.lease(agent_id, "returned", lease_id, unused)
    return Returned(unused, ledger.available(state.budget, state.spent, state.outstanding - unused))


async def expire_leases(
    pool: asyncpg.Pool, now: datetime | None = None, batch: int = 500, publisher: Publisher | None = None
) -> int:
    """Close open leases past their expiry and return their unused grants; the sweeper's step."""
    now = now or utcnow()
    expired = 0
    for agent_id in await repo.agents_with_expired_leases(pool, now, batch):
        closed: list[tuple[str, int]] = []
        async with pool.acquire() as conn, conn.transaction():
            if await repo.lock_agent(conn, agent_id) is None:
                continue
            for lease in await repo.expired_leases(conn, agent_id, now):
                unused = ledger.unused(lease.granted, lease.spent)
                await repo.close_lease(conn, lease, "expired", unused)
                closed.append((lease.id, unused))
        expired += len(closed)
        if publisher is not None:
            for lease_id, unused in closed:
                publisher.lease(agent_id, "expired", lease_id, unused)
    return expired


async def set_budget(
    conn: Conn,
    agent_id: str,
    new_budget: int,
    *,
    force: bool,
    changed_by: str | None,
    reason: str | None,
) -> tuple[AgentLedger, AgentLedger]:
    """Change the budget only (never spent or outstanding); return the ledger before and after.

    Runs in the caller's transaction so that it can join a larger one (an approval).
    """
    state = await _locked_agent(conn, agent_id)
    if new_budget < state.budget:
        if not force:
            raise validation_error({"force": "Lowering a budget requires force: true"})
        if not ledger.may_set_budget(new_budget, state.spent, state.outstanding):
            raise conflict(
                "The budget cannot drop below what is spent and lent to open leases",
                spent=usd(state.spent),
                outstanding=usd(state.outstanding),
                minimum=usd(state.spent + state.outstanding),
            )
    await repo.set_budget(conn, agent_id, state.budget, new_budget, changed_by, reason)
    after = AgentLedger(agent_id, new_budget, state.spent, state.outstanding, state.active)
    return state, after
