"""The PostgreSQL pool, shared by every handler through the app state."""

from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from litestar import Request
from litestar.datastructures import State

Conn = asyncpg.Connection | PoolConnectionProxy
"""A connection, as taken from the pool or opened directly: what a transaction runs on."""
Executor = asyncpg.Pool | Conn
"""Anything a single statement can run on."""


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
