"""Rate limits: seed 004's table, the X-RateLimit-* headers, 429 with Retry-After, counted in Redis.

Each test counts against users (and so Redis keys) of its own, so no test can throttle another.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from litestar import Litestar
from litestar.routes import HTTPRoute
from redis.exceptions import ConnectionError as RedisConnectionError

from control_plane.lib import ratelimit
from control_plane.lib.ratelimit import SCOPES, RateLimits, Rule, category_of
from control_plane.settings import SettingsError
from iron import ids
from iron.embedded import free_port
from tests.conftest import control_planes
from tests.control_plane.helpers import create_agent, make_person


@pytest.fixture
def limits(app: Litestar, monkeypatch: pytest.MonkeyPatch) -> None:
    """Low limits for this test only (the app's state is restored after it)."""
    low = RateLimits.parse("read=5/60,analytics=3/60,token_rotate=2/3600,settings=2/3600,write=3/60")
    monkeypatch.setitem(app.state, "rate_limits", low)


def _rate_headers(response: httpx.Response) -> tuple[int, int, int]:
    return (
        int(response.headers["x-ratelimit-limit"]),
        int(response.headers["x-ratelimit-remaining"]),
        int(response.headers["x-ratelimit-reset"]),
    )


# --- routes to categories --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "category"),
    [
        ("GET", "/api/v1/agents", "read"),
        ("GET", "/api/v1/agents/{agent_id}", "read"),
        ("GET", "/api/v1/audit-logs", "read"),
        ("GET", "/api/v1/budget/requests", "read"),  # an alias of budget requests, not the protocol
        ("GET", "/api/v1/analytics/spending/total", "analytics"),
        ("GET", "/api/v1/audit-logs/export", "analytics"),
        ("POST", "/api/v1/api-tokens", "token_write"),
        ("DELETE", "/api/v1/api-tokens/{token_id}", "token_write"),
        ("POST", "/api/v1/tokens", "token_write"),
        ("DELETE", "/api/v1/tokens/{token_id}", "token_write"),
        ("DELETE", "/api/v1/agents/{agent_id}/ic-token", "token_write"),
        ("POST", "/api/v1/api-tokens/{token_id}/rotate", "token_rotate"),
        ("PUT", "/api/v1/tokens/{token_id}/rotate", "token_rotate"),
        ("POST", "/api/v1/agents/{agent_id}/ic-token/regenerate", "token_rotate"),
        ("PUT", "/api/v1/limits/agents/{agent_id}/budget", "settings"),
        ("POST", "/api/v1/users", "settings"),
        ("PUT", "/api/v1/users/{user_id}/role", "settings"),
        ("POST", "/api/v1/providers", "settings"),
        ("DELETE", "/api/v1/providers/{provider_id}", "settings"),
        ("POST", "/api/v1/agents", "write"),
        ("PUT", "/api/v1/agents/{agent_id}", "write"),
        ("POST", "/api/v1/budget-requests", "write"),
        ("PATCH", "/api/v1/budget/requests/{budget_request_id}/approve", "write"),
        # never limited here
        ("GET", "/api/health", None),
        ("GET", "/api/version", None),
        ("GET", "/api/v1/version", None),
        ("POST", "/api/v1/auth/login", None),
        ("POST", "/api/v1/auth/logout", None),
        ("POST", "/api/v1/budget/handshake", None),
        ("POST", "/api/v1/budget/report", None),
        ("POST", "/api/budget/refresh", None),
        ("POST", "/api/v1/auth/handshake", None),
        ("POST", "/api/v1/agents/provider-key", None),
        ("POST", "/api/v1/analytics/events", None),
        ("GET", "/ws", None),
        ("GET", "/schema/openapi.json", None),
    ],
)
def test_routes_fall_in_the_seed_categories(method: str, path: str, category: str | None) -> None:
    assert category_of(method, path) == category


def test_a_handler_or_the_registry_can_name_its_category(monkeypatch: pytest.MonkeyPatch) -> None:
    assert category_of("POST", "/api/v1/agents", {"rate_limit": "settings"}) == "settings"
    assert category_of("GET", "/api/v1/agents", {"rate_limit": None}) is None
    monkeypatch.setitem(ratelimit.OVERRIDES, ("POST", "/api/v1/things"), "analytics")
    assert category_of("post", "/api/v1/things") == "analytics"


def test_every_route_of_the_app_has_a_known_category(app: Litestar) -> None:
    seen = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute):  # /ws: a WebSocket route has no HTTP methods
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods:
                category = category_of(method, route.path_format, handler.opt)
                assert category is None or category in ratelimit.DEFAULT_RULES, (method, route.path_format)
                seen.add(category)
    assert {"read", "write", "settings", "token_write", "token_rotate", None} <= seen


def test_default_limits_are_the_seeds_table() -> None:
    rules = RateLimits().rules
    assert rules["auth"] == Rule(5, 300)
    assert rules["token_write"] == Rule(10, 3600)
    assert rules["token_rotate"] == Rule(5, 3600)
    assert rules["read"] == Rule(100, 60)
    assert rules["analytics"] == Rule(20, 60)
    assert rules["settings"] == Rule(30, 3600)


def test_limits_are_configurable() -> None:
    assert not RateLimits.parse("off").enabled
    assert RateLimits.parse("off").rule("read") is None
    custom = RateLimits.parse(" read=7/10 , settings=1/5 ")
    assert (custom.rule("read"), custom.rule("settings"), custom.rule("analytics")) == (
        Rule(7, 10),
        Rule(1, 5),
        Rule(20, 60),
    )
    scaled = RateLimits.parse("", "10")
    assert (scaled.rule("read"), scaled.rule("token_rotate")) == (Rule(1000, 60), Rule(50, 3600))
    assert RateLimits.parse(None, "0.01").rule("auth") == Rule(1, 300)  # never below 1
    env = {"IRON_RATE_LIMITS": "read=3/9", "IRON_RATE_LIMITS_SCALE": "2"}
    assert RateLimits.from_settings(object(), env).rule("read") == Rule(6, 9)

    class WithFields:
        rate_limits = "off"
        rate_limits_scale = None

    assert not RateLimits.from_settings(WithFields(), env).enabled  # the settings win over env
    for bad in ("read=0/60", "nosuch=1/60", "read=5", "read=a/b"):
        with pytest.raises(SettingsError):
            RateLimits.parse(bad)
    for scale in ("0", "-1", "x", "inf"):
        with pytest.raises(SettingsError):
            RateLimits.parse("", scale)


# --- the counter -----------------------------------------------------------------------------


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _key() -> str:
    return f"iron:rl:test:{uuid.uuid4().hex}"


async def test_hit_admits_exactly_the_limit_then_refuses_without_counting(redis_client: redis.Redis) -> None:
    key, before = _key(), time.time()
    decisions = [await ratelimit.hit(redis_client, key, 3, 60) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert all(d.limit == 3 and d.window_s == 60 and d.counted for d in decisions)
    first_reset = decisions[0].reset_at
    assert before + 59 <= first_reset <= time.time() + 61
    assert {d.reset_at for d in decisions} == {first_reset}  # the oldest entry frees the first slot
    refused = decisions[-1]
    assert 1 <= refused.retry_after <= 60
    assert refused.headers()["Retry-After"] == str(refused.retry_after)
    assert await redis_client.zcard(key) == 3  # refusals are not recorded
    assert 0 < await redis_client.pttl(key) <= 60_000


async def test_the_window_slides(redis_client: redis.Redis) -> None:
    key = _key()
    assert (await ratelimit.hit(redis_client, key, 2, 1)).allowed
    await asyncio.sleep(0.5)
    assert (await ratelimit.hit(redis_client, key, 2, 1)).allowed
    assert not (await ratelimit.hit(redis_client, key, 2, 1)).allowed
    await asyncio.sleep(0.6)  # the first has left the window, the second has not
    assert (await ratelimit.hit(redis_client, key, 2, 1)).allowed
    assert not (await ratelimit.hit(redis_client, key, 2, 1)).allowed


async def test_concurrent_hits_admit_exactly_the_limit(redis_url: str) -> None:
    key = _key()
    clients = [redis.Redis.from_url(redis_url) for _ in range(4)]  # as if from 4 replicas
    try:
        decisions = await asyncio.gather(*(ratelimit.hit(clients[n % 4], key, 10, 60) for n in range(60)))
    finally:
        for client in clients:
            await client.aclose()
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))


async def test_the_script_is_loaded_when_redis_forgot_it(redis_client: redis.Redis) -> None:
    await redis_client.script_flush()
    assert (await ratelimit.hit(redis_client, _key(), 1, 60)).allowed
    assert (await redis_client.script_exists(ratelimit.SCRIPT_SHA)) == [True]


async def test_redis_unavailable_fails_open_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    monkey_state = ratelimit._redis_down
    ratelimit._redis_down = False
    try:
        with caplog.at_level(logging.WARNING, logger="iron.control_plane"):
            decisions = [await ratelimit.hit(client, _key(), 1, 60) for _ in range(3)]
    finally:
        ratelimit._redis_down = monkey_state
        await client.aclose()
    assert all(d.allowed and not d.counted for d in decisions)
    assert all(d.headers() == {} for d in decisions)
    warnings = [r for r in caplog.records if "rate limiter" in r.getMessage()]
    assert len(warnings) == 1


# --- through the app -------------------------------------------------------------------------


@pytest.mark.usefixtures("limits")
async def test_reads_are_limited_per_user_with_headers_then_429(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    alice, bob = (
        (await make_person(client, pool, "user")).headers,
        (await make_person(client, pool, "user")).headers,
    )
    before = time.time()
    seen = []
    for _ in range(5):
        response = await client.get("/api/v1/agents", headers=alice)
        assert response.status_code == 200, response.text
        seen.append(_rate_headers(response))
    assert [limit for limit, _, _ in seen] == [5] * 5
    assert [remaining for _, remaining, _ in seen] == [4, 3, 2, 1, 0]
    assert all(before + 59 <= reset <= time.time() + 61 for _, _, reset in seen)

    refused = await client.get("/api/v1/agents", headers=alice)
    assert refused.status_code == 429
    assert _rate_headers(refused)[:2] == (5, 0)
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert refused.headers["x-request-id"]
    error = refused.json()["error"]
    assert error["code"] == "RATE_LIMIT_EXCEEDED"
    assert error["message"] == "Rate limit exceeded (max 5 req/min)"
    assert error["request_id"] == refused.headers["x-request-id"]
    details = error["details"]
    assert (details["limit"], details["window_seconds"], details["retry_after_seconds"]) == (
        5,
        60,
        retry_after,
    )
    reset_at = datetime.fromisoformat(details["reset_at"].replace("Z", "+00:00")).timestamp()
    assert reset_at == int(refused.headers["x-ratelimit-reset"])

    # the count is per user and category, not per route
    assert (await client.get("/api/v1/limits/agents/x/budget/history", headers=alice)).status_code == 429
    assert (await client.get("/api/v1/agents", headers=bob)).status_code == 200


@pytest.mark.usefixtures("limits")
async def test_errors_after_authentication_count_and_carry_headers(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    carol = (await make_person(client, pool, "user")).headers
    response = await client.get("/api/v1/agents/not-an-id", headers=carol)
    assert response.status_code == 400
    assert _rate_headers(response)[:2] == (5, 4)
    response = await client.get(f"/api/v1/agents/{ids.new_id(ids.AGENT)}", headers=carol)
    assert response.status_code == 404
    assert _rate_headers(response)[:2] == (5, 3)


async def test_unauthenticated_and_exempt_requests_are_not_limited(
    app: Litestar, client: httpx.AsyncClient, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = (await create_agent(client, (await make_person(client, pool, "admin")).headers, 10)).headers
    monkeypatch.setitem(app.state, "rate_limits", RateLimits.parse(",".join(f"{c}=1/60" for c in SCOPES)))
    for _ in range(5):  # more than any limit now
        for response in (
            await client.get("/api/health"),
            await client.get("/api/version"),
            await client.get("/api/v1/agents"),  # 401: nobody to count against
            await client.get("/api/v1/agents", headers=agent),  # IC token: 403
            await client.post("/api/v1/budget/handshake", headers=agent, json={"requested_budget": 0.01}),
        ):
            assert response.status_code in {200, 401, 403}, response.text
            assert "x-ratelimit-limit" not in response.headers


async def test_token_rotation_is_limited_per_token(
    app: Litestar, client: httpx.AsyncClient, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = (await make_person(client, pool, "admin")).headers
    first, second = [(await create_agent(client, admin, 10)).id for _ in range(2)]
    monkeypatch.setitem(app.state, "rate_limits", RateLimits.parse("token_rotate=2/3600"))
    path = "/api/v1/agents/{}/ic-token/regenerate"
    statuses = [(await client.post(path.format(first), headers=admin)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    other = await client.post(path.format(second), headers=admin)  # another token: its own count
    assert other.status_code == 200
    assert _rate_headers(other)[:2] == (2, 1)


@pytest.mark.usefixtures("limits")
async def test_settings_updates_are_limited(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    admin = (await make_person(client, pool, "admin")).headers
    path = f"/api/v1/limits/agents/{ids.new_id(ids.AGENT)}/budget"
    statuses = [(await client.put(path, headers=admin, json={"budget": 5})).status_code for _ in range(3)]
    assert statuses == [404, 404, 429]


async def test_limits_off_sends_no_headers(
    app: Litestar, client: httpx.AsyncClient, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.state, "rate_limits", RateLimits.parse("off"))
    dave = (await make_person(client, pool, "user")).headers
    response = await client.get("/api/v1/agents", headers=dave)
    assert response.status_code == 200
    assert "x-ratelimit-limit" not in response.headers


@pytest.mark.usefixtures("limits")
async def test_redis_trouble_lets_requests_through_without_headers(
    client: httpx.AsyncClient, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    erin = (await make_person(client, pool, "user")).headers

    async def unavailable(*args: Any) -> list[int]:
        raise RedisConnectionError("down")

    monkeypatch.setattr(ratelimit, "_run", unavailable)
    monkeypatch.setattr(ratelimit, "_redis_down", True)  # already logged: keep the log quiet
    for _ in range(8):
        response = await client.get("/api/v1/agents", headers=erin)
        assert response.status_code == 200
        assert "x-ratelimit-limit" not in response.headers


# --- across processes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def limited_processes(
    env: dict[str, str], client: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[str]]:
    """Two real control planes on the test database and Redis, with a low read limit."""
    extra = {
        "IRON_RATE_LIMITS": "read=20/60",
        "IRON_RATE_LIMITS_SCALE": "1",
        # small pools: with the session's app and other test processes, PostgreSQL's 100
        # connections would otherwise run out under this test's burst (a 500, not a limit)
        "IRON_DB_POOL_MIN": "1",
        "IRON_DB_POOL_MAX": "4",
    }
    async with control_planes({**env, **extra}, tmp_path_factory.mktemp("limited"), "1", "2") as urls:
        yield urls


@pytest.mark.slow
async def test_limits_hold_across_two_processes_sharing_redis(
    limited_processes: list[str], client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    headers = (await make_person(client, pool, "user")).headers
    async with httpx.AsyncClient(timeout=30) as http:
        responses = await asyncio.gather(
            *(http.get(f"{limited_processes[n % 2]}/api/v1/agents", headers=headers) for n in range(50))
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 20, statuses
    assert statuses.count(429) == 30, statuses
    admitted = sorted(int(r.headers["x-ratelimit-remaining"]) for r in responses if r.status_code == 200)
    assert admitted == list(range(20))  # one counter: each remaining value handed out once
    assert all(r.headers["x-ratelimit-limit"] == "20" for r in responses)
