"""The control plane's housekeeping loop: it closes leases whose holder vanished, so their
unused grants flow back, deletes refresh tokens that can no longer be used, and, when a
retention is set, the raw usage events older than it.

Every replica runs one; they do not step on each other because each agent's
expiry happens under that agent's row lock and skips leases already closed,
deleting a row twice deletes it once, and partitions are made and dropped under
one advisory lock.
"""

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from control_plane.analytics import periods
from control_plane.analytics import repository as usage
from control_plane.auth import repository as sessions
from control_plane.budget.service import expire_leases
from control_plane.realtime.publisher import Publisher
from iron.timefmt import utcnow

log = logging.getLogger("iron.control_plane")

_BATCH = 1000


async def _dead_refresh_tokens(pool: asyncpg.Pool) -> int:
    return await sessions.delete_dead_refresh_tokens(pool, _BATCH)


async def _old_usage_months(pool: asyncpg.Pool, retention_months: int) -> int:
    horizon = periods.raw_horizon(utcnow(), retention_months)
    return 0 if horizon is None else await usage.drop_months_before(pool, horizon)


async def _old_usage_elsewhere(pool: asyncpg.Pool, retention_months: int) -> int:
    horizon = periods.raw_horizon(utcnow(), retention_months)
    return 0 if horizon is None else await usage.delete_default_before(pool, horizon, _BATCH)


Step = tuple[str, Callable[[asyncpg.Pool], Awaitable[int]]]


def _steps(publisher: Publisher | None, retention_months: int) -> tuple[Step, ...]:
    """Each sweep's steps: what it does (for the log), and the step, which returns how many it did."""
    steps: tuple[Step, ...] = (
        ("expired lease(s)", functools.partial(expire_leases, publisher=publisher)),
        ("dead refresh token(s) deleted", _dead_refresh_tokens),
    )
    if retention_months:
        steps += (
            (
                "month(s) of raw usage events dropped",
                functools.partial(_old_usage_months, retention_months=retention_months),
            ),
            (
                "old raw usage event(s) deleted",
                functools.partial(_old_usage_elsewhere, retention_months=retention_months),
            ),
        )
    return steps


async def run_sweeper(
    pool: asyncpg.Pool, interval_s: float, publisher: Publisher | None = None, retention_months: int = 0
) -> None:
    steps = _steps(publisher, retention_months)
    while True:
        await asyncio.sleep(interval_s)
        for what, step in steps:
            try:
                done = await step(pool)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("sweep failed (%s): %s", what, type(exc).__name__)
                continue
            if done:
                log.info("sweep: %d %s", done, what)
