"""Fixtures: real PostgreSQL and Redis (the machine's, or embedded ones), a fresh database per run."""

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from litestar import Litestar

from control_plane.app import create_app
from control_plane.settings import Settings
from iron.embedded import ServiceUrls, default_data_root, free_port, scratch_database, services
from tests.sidecar.fault_processes import ServerProcess, control_plane_argv

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "correct horse battery staple"
FAKE_PROVIDER_KEY = "sk-test-provider-key-0123456789"


def provider_body(name: str | None = None, key: str = FAKE_PROVIDER_KEY, **extra: Any) -> dict[str, Any]:
    """A valid ``POST /api/v1/providers`` body (a fake OpenAI endpoint; nothing is ever called)."""
    return {
        "name": name or f"provider-{secrets.token_hex(4)}",
        "type": "openai",
        "endpoint": "https://api.openai.example/v1",
        "credentials": {"api_key": key},
        "models": ["gpt-4o-mini"],
        **extra,
    }


@pytest.fixture(scope="session")
def service_urls() -> Iterator[ServiceUrls]:
    with services(default_data_root() / "test") as urls:
        yield urls


@pytest.fixture(scope="session")
async def database_url(service_urls: ServiceUrls) -> AsyncIterator[str]:
    async with scratch_database(service_urls.database_url, "iron_test") as url:
        yield url


@pytest.fixture(scope="session")
async def redis_url(service_urls: ServiceUrls) -> str:
    client = redis.Redis.from_url(service_urls.redis_url)
    await client.flushdb()
    await client.aclose()
    return service_urls.redis_url


@pytest.fixture(scope="session")
def env(database_url: str, redis_url: str) -> dict[str, str]:
    """The environment a control plane under test runs with."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "IRON_BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
        "IRON_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "IRON_SWEEP_INTERVAL": "3600",
        # many tests share one admin; the limiter has tests of its own (test_rate_limits.py)
        "IRON_RATE_LIMITS": "off",
    }


@pytest.fixture(scope="session")
async def app(env: dict[str, str]) -> AsyncIterator[Litestar]:
    """The real application, started (migrations, pool, Redis) in the tests' own event loop."""
    application = create_app(Settings.from_env(env))
    started, stop = asyncio.Event(), asyncio.Event()

    async def serve() -> None:  # the lifespan must be entered and left by one task
        async with application.lifespan():
            started.set()
            await stop.wait()

    server = asyncio.create_task(serve())
    ready = asyncio.create_task(started.wait())
    await asyncio.wait({server, ready}, return_when=asyncio.FIRST_COMPLETED)
    if server.done():
        server.result()  # start-up failed: raise its error
    yield application
    stop.set()
    await server


@pytest.fixture(scope="session")
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://control-plane") as http:
        yield http


@pytest.fixture(scope="session")
def pool(app: Litestar) -> asyncpg.Pool:
    pool: asyncpg.Pool = app.state.pool
    return pool


async def login(client: Any, email: str, password: str) -> dict[str, str]:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['user_token']}"}


@pytest.fixture(scope="session")
async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    return await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture(scope="session")
async def provider_id(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> str:
    response = await client.post(
        "/api/v1/providers", headers=admin_headers, json=provider_body("openai-main")
    )
    assert response.status_code == 201, response.text
    provider: str = response.json()["id"]
    return provider


@dataclass(frozen=True)
class AgentHandle:
    id: str
    ic_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.ic_token}"}


MakeAgent = Callable[..., Awaitable[AgentHandle]]


async def open_lease(client: httpx.AsyncClient, agent: AgentHandle, usd: float) -> dict[str, Any]:
    """A successful handshake's body."""
    response = await client.post(
        "/api/v1/budget/handshake", headers=agent.headers, json={"requested_budget": usd}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="session")
def make_agent(client: httpx.AsyncClient, admin_headers: dict[str, str], provider_id: str) -> MakeAgent:
    async def make(budget: float = 100.0, providers: list[str] | None = None) -> AgentHandle:
        response = await client.post(
            "/api/v1/agents",
            headers=admin_headers,
            json={
                "name": f"agent-{secrets.token_hex(3)}",
                "budget": budget,
                "providers": [provider_id] if providers is None else providers,
            },
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return AgentHandle(body["id"], body["ic_token"]["token"])

    return make


async def until_lock_waiters(conn: Any, at_least: int = 1, table: str | None = None) -> None:
    """Until ``at_least`` transactions of this database wait for a lock: on ``table``, or (None)
    an advisory lock. Lets a test hold a lock until the requests it sent have all reached it.
    ``conn``: a connection or pool on the database. For at most 30 s."""
    query = """SELECT count(*) FROM pg_locks WHERE NOT granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND CASE WHEN $1::text IS NULL THEN locktype = 'advisory'
                        ELSE relation = to_regclass($1) END"""
    for _ in range(1500):
        if await conn.fetchval(query, table) >= at_least:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(
        f"fewer than {at_least} transactions waited for a lock on {table or 'an advisory key'}"
    )


async def start_control_plane(
    env: dict[str, str], log_dir: Path, name: str, timeout_s: float = 30.0
) -> ServerProcess:
    """A real control-plane process with ``env`` added to this one's, once it answers its health
    check; its output goes to ``log_dir``."""
    port = free_port()
    process = ServerProcess(name, control_plane_argv(port), env, port, log_dir, "/api/health")
    return await process.start_ready(timeout_s)


@contextlib.asynccontextmanager
async def control_planes(
    env: dict[str, str], log_dir: Path, *names: str, timeout_s: float = 30.0
) -> AsyncIterator[list[str]]:
    """One control-plane process per name; their base URLs. All are stopped at the end, also when
    one of them failed to start."""
    started: list[ServerProcess] = []
    try:
        for name in names:
            started.append(await start_control_plane(env, log_dir, f"control-plane-{name}", timeout_s))
        yield [process.url for process in started]
    finally:
        for process in started:
            process.cleanup()


@pytest.fixture(scope="session")
async def control_plane_processes(
    env: dict[str, str], client: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[str]]:
    """Two real control-plane processes on the test database, for cross-process races (a minute
    to start: the rest of the suite may be loading the machine)."""
    log_dir = tmp_path_factory.mktemp("control-planes")
    async with control_planes(env, log_dir, "1", "2", timeout_s=60.0) as urls:
        yield urls
