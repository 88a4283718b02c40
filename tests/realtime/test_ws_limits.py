"""Per-IP limits of ``/ws``: failed handshakes and connection attempts, refused with an ERROR and
CLOSE_RATE_LIMITED, on a control plane with small limits (the other tests run with limits off)."""

from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as redis

from iron.realtime import CLOSE_RATE_LIMITED, CLOSE_UNAUTHORIZED, StateUpdate
from tests.conftest import control_planes
from tests.realtime.conftest import REALTIME_ENV, make_person, open_feed, refusal

CONNECTIONS, FAILURES = 6, 2


@pytest.fixture(scope="module")
async def limited(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    limits = f"ws_connect={CONNECTIONS}/600,ws_auth_failure={FAILURES}/600"
    async with control_planes(
        {**env, **REALTIME_ENV, "IRON_RATE_LIMITS": limits}, tmp_path_factory.mktemp("ws-limits"), "limited"
    ) as (url,):
        yield url


@pytest.fixture
async def fresh_counts(env: dict[str, str]) -> None:
    """Each test starts with this IP's /ws counts at zero."""
    client = redis.Redis.from_url(env["REDIS_URL"])
    await client.delete("iron:rl:ws_connect:127.0.0.1", "iron:rl:ws_auth_failure:127.0.0.1")
    await client.aclose()


def _auth(token: str) -> str:
    return f'{{"type": "auth", "token": "{token}"}}'


@pytest.mark.usefixtures("fresh_counts")
async def test_failed_handshakes_are_limited(limited: str) -> None:
    for _ in range(FAILURES):
        error, close_code = await refusal(limited, _auth("garbage"))
        assert (error.error.code, close_code) == ("AUTH_INVALID_TOKEN", CLOSE_UNAUTHORIZED)
    error, close_code = await refusal(limited, None)  # refused before the auth message is read
    assert (error.error.code, close_code) == ("RATE_LIMIT_EXCEEDED", CLOSE_RATE_LIMITED)
    assert "failed handshakes" in error.error.message


@pytest.mark.usefixtures("fresh_counts")
async def test_connection_attempts_are_limited_and_good_handshakes_are_not_failures(
    limited: str, client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    person = await make_person(client, admin_headers)
    for _ in range(CONNECTIONS):  # more than FAILURES: a handshake that succeeds is not counted as one
        async with open_feed(limited, person.token) as reader:
            await reader.wait_for(lambda ms: any(isinstance(m, StateUpdate) for m in ms))
    error, close_code = await refusal(limited, None)
    assert (error.error.code, close_code) == ("RATE_LIMIT_EXCEEDED", CLOSE_RATE_LIMITED)
    assert "connection attempts" in error.error.message
