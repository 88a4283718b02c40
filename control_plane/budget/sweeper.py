"""The control plane's housekeeping loop: it closes leases whose holder vanished, so their
unused grants flow back, and deletes refresh tokens that can no longer be used.

Every replica runs one; they do not step on each other because each agent's
expiry happens under that agent's row lock and skips leases already closed, and
deleting a row twice deletes it once.
"""

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from control_plane.auth import repository as sessions
from control_plane.budget.service import expire_leases
from control_plane.realtime.publisher import Publisher

log = logging.getLogger("iron.control_plane")

_BATCH = 1000


async def _dead_refresh_tokens(pool: asyncpg.Pool) -> int:
    return await sessions.delete_dead_refresh_tokens(pool, _BATCH)


def _steps(publisher: Publisher | None) -> tuple[tuple[str, Callable[[asyncpg.Pool], Awaitable[int]]], ...]:
    """Each sweep's steps: what it does (for the log), and the step, which returns how many it did."""
    return (
        ("expired lease(s)", functools.partial(expire_leases, publisher=publisher)),
        ("dead refresh token(s) deleted", _dead_refresh_tokens),
    )


async def run_sweeper(pool: asyncpg.Pool, interval_s: float, publisher: Publisher | None = None) -> None:
    steps = _steps(publisher)
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
