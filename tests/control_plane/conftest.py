"""Fixtures of the control-plane tests (helpers that are not fixtures: tests/control_plane/helpers.py)."""

import asyncpg
import httpx
import pytest

from tests.control_plane.helpers import Roles, make_roles


@pytest.fixture(scope="module")
async def roles(client: httpx.AsyncClient, pool: asyncpg.Pool) -> Roles:
    """An owner, another user and a viewer, of the test module's own."""
    return await make_roles(client, pool)
