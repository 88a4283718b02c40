"""Analytics: every LLM call counted once whichever path it came by, charged by the ledger's
rules, and questions about usage answered from the rollups, within what the caller may read.

Scope: admins see every agent, users and viewers their own (deleted agents included: their
usage is history). Filters narrow it; an agent, project or provider that does not exist, or an
agent the caller may not read, is 404.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

import asyncpg
from litestar.datastructures import State

from control_plane.analytics import periods, repository
from control_plane.analytics.params import Asked
from control_plane.analytics.periods import Period
from control_plane.analytics.repository import Scope, UsageRow, Window
from control_plane.auth.principals import UserPrincipal
from control_plane.budget import repository as budget_repo
from control_plane.budget import service as budget
from control_plane.budget.repository import AgentLedger
from control_plane.lib.db import Executor
from control_plane.lib.errors import not_found
from control_plane.projects import repository as projects
from control_plane.realtime.alerts import crossed
from control_plane.realtime.publisher import Publisher

#: Up to this many calls, a median is computed from the calls themselves (an index-only scan);
#: above, from the rollups' cost histograms.
EXACT_MEDIAN_LIMIT: Final = 5_000
#: Cost histogram bins per doubling (``usage_cost_bin`` in migration 0005).
BINS_PER_OCTAVE: Final = 8


@dataclass(frozen=True, slots=True)
class Accepted:
    """A committed batch's new events and the agent's ledger before and after their charge."""

    agent_id: str
    events: list[UsageRow]
    before: AgentLedger
    after: AgentLedger


async def events_accepted(state: State, accepted: Accepted) -> None:
    """The one hook for newly counted calls: each ingestion path (budget report, analytics events)
    calls it once per batch that had new events, after the batch's transaction committed.

    The realtime feed publishes here: AGENT_EVENT per event, COST_ALERT when the agent's spend
    crossed a threshold between ``accepted.before`` and ``accepted.after``. Exact across replicas:
    both figures were read under the agent's row lock.
    """
    publisher: Publisher = state.publisher
    publisher.usage(
        accepted.agent_id,
        accepted.events,
        crossed(accepted.before.budget, accepted.before.spent, accepted.after.spent),
    )


async def ingest(pool: asyncpg.Pool, agent_id: str, events: Sequence[UsageRow]) -> Accepted:
    """Record the new events and charge them: to the agent's open lease with the most unused grant
    (locked after the agent, as everywhere), or with no open lease, as an overdraw."""
    await repository.ensure_partitions(pool, events)
    async with pool.acquire() as conn, conn.transaction():
        state = await budget_repo.lock_agent(conn, agent_id)
        if state is None:
            raise not_found("Agent", agent_id=agent_id)
        lease = await budget_repo.lock_roomiest_lease(conn, agent_id)
        new = await repository.insert_new(conn, agent_id, lease.id if lease else None, "analytics", events)
        after = await budget.charge_usage(conn, state, lease, sum(event.cost for event in new))
    return Accepted(agent_id, new, state, after)


def outcomes(event_ids: Sequence[str], accepted: Accepted) -> list[bool]:
    """Per id sent, whether it was accepted (only its first occurrence can be)."""
    new = {event.event_id for event in accepted.events}
    seen: set[str] = set()
    result = []
    for event_id in event_ids:
        result.append(event_id in new and event_id not in seen)
        seen.add(event_id)
    return result


# --- queries ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class View:
    period: Period
    window: Window
    raw_kept: bool  # the window's raw events are all still kept (an exact median can be taken)


async def _scope(pool: Executor, user: UserPrincipal, asked: Asked) -> Scope:
    labels = None
    if asked.provider_id is not None:
        labels = await repository.provider_labels(pool, asked.provider_id)
        if labels is None:
            raise not_found("Provider", provider_id=asked.provider_id)
    if asked.project_id is not None and not await projects.exists(pool, asked.project_id):
        raise not_found("Project", project_id=asked.project_id)
    if asked.agent_id is not None:
        owner = await repository.agent_owner(pool, asked.agent_id)
        if owner is None or not (user.is_admin or owner == user.user_id):
            raise not_found("Agent", agent_id=asked.agent_id)
    if user.is_admin and asked.project_id is None and asked.agent_id is None:
        return Scope(None, labels)
    owner_id = None if user.is_admin else user.user_id
    return Scope(await repository.agent_ids(pool, owner_id, asked.project_id, asked.agent_id), labels)


async def view(
    pool: Executor,
    user: UserPrincipal,
    asked: Asked,
    now: datetime,
    horizon: datetime | None = None,
    raw_only: bool = False,
) -> View:
    """The usage a query covers: whose (what ``user`` may read, narrowed by the filters) and when.

    Raw events before ``horizon`` are no longer kept (:func:`periods.raw_horizon`): a custom
    period's ends before it are widened to whole hours, which the rollups hold; a query of the
    raw events alone (``raw_only``) starts at the horizon. The period answered says so.
    """
    scope = await _scope(pool, user, asked)
    if asked.start is not None and asked.end is not None:
        period = Period(periods.CUSTOM, *periods.on_rollups(asked.start, asked.end, horizon))
    elif asked.period == periods.ALL_TIME:
        period = periods.all_time(*await repository.data_bounds(pool, scope), now)
    else:
        period = periods.named(asked.period, now)
    if raw_only and horizon is not None and period.start < horizon:
        period = Period(period.name, min(horizon, period.end), period.end)
    raw_kept = horizon is None or period.start >= horizon
    return View(period, Window(scope, period.start, period.end), raw_kept)


def rounded(value: float | Decimal) -> int:
    return int(Decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _bin_middle(bin_: int) -> float:
    """The geometric middle of a cost bin: within 4.5 % of any cost in it."""
    return 0.0 if bin_ == 0 else float(2 ** ((bin_ - 0.5) / BINS_PER_OCTAVE))


def estimated_median(histogram: Sequence[tuple[int, int]], lowest: int, highest: int) -> int:
    """The median of a cost histogram: the middles of the bins holding the two middle ranks,
    averaged, kept within the known ``lowest`` and ``highest`` cost."""
    total = sum(count for _, count in histogram)
    ranks = [(total + 1) // 2, total // 2 + 1]
    middles: list[float] = []
    seen = 0
    for bin_, count in histogram:
        seen += count
        while ranks and seen >= ranks[0]:
            ranks.pop(0)
            middles.append(_bin_middle(bin_))
    if not middles:
        return lowest
    return rounded(min(max(sum(middles) / len(middles), lowest), highest))


async def median(
    pool: Executor,
    window: Window,
    requests: int,
    lowest: int,
    highest: int,
    exact_limit: int = EXACT_MEDIAN_LIMIT,
) -> tuple[int, bool]:
    """The median cost per call (rounded to the microdollar) and whether it is exact."""
    if requests <= exact_limit:
        exact = await repository.exact_median(pool, window)
        if exact is not None:
            return rounded(exact), True
    return estimated_median(await repository.histogram(pool, window), lowest, highest), False
