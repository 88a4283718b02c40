"""Closes leases whose holder vanished, so their unused grants flow back.

Every replica runs one; they do not step on each other because each agent's
expiry happens under that agent's row lock and skips leases already closed.
"""

import asyncio
import logging

import asyncpg

from control_plane.budget.service import expire_leases
from control_plane.realtime.publisher import Publisher

log = logging.getLogger("iron.control_plane")


async def run_sweeper(pool: asyncpg.Pool, interval_s: float, publisher: Publisher | None = None) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            expired = await expire_leases(pool, publisher=publisher)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("lease sweep failed: %s", type(exc).__name__)
            continue
        if expired:
            log.info("lease sweep expired %d lease(s)", expired)
