"""The PostgreSQL pool, shared by every handler through the app state."""

from typing import Any

import asyncpg
from litestar import Request
from litestar.datastructures import State


async def create_pool(dsn: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=30)
    assert pool is not None
    return pool


def pool_of(state: State) -> asyncpg.Pool:
    pool: asyncpg.Pool = state.pool
    return pool


def provide_pool(request: Request[Any, Any, Any]) -> asyncpg.Pool:
    """Litestar dependency: ``pool: asyncpg.Pool`` in a handler signature."""
    return pool_of(request.app.state)
