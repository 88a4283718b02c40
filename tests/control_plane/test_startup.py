"""How the control plane starts: migrations under concurrency, settings, health and version."""

import asyncio
import os
import secrets
import subprocess
import sys
from typing import Any

import asyncpg
import httpx
import pytest

from control_plane.app import create_app
from control_plane.lib.migrations import apply_migrations
from control_plane.settings import Settings, SettingsError
from iron.embedded import ServiceUrls, scratch_database


async def test_replicas_starting_at_once_apply_each_migration_exactly_once(
    service_urls: ServiceUrls,
) -> None:
    async with scratch_database(service_urls.database_url, "iron_mig") as url:
        conns = [await asyncpg.connect(url) for _ in range(4)]
        results = await asyncio.gather(*(apply_migrations(conn) for conn in conns))
        applied = [versions for versions in results if versions]
        assert len(applied) == 1, results
        assert applied[0][0] == "0001_foundation"
        assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == len(applied[0])
        assert await apply_migrations(conns[0]) == []
        for conn in conns:
            await conn.close()


def test_production_refuses_default_secrets() -> None:
    base = {"DATABASE_URL": "postgresql://db/x", "REDIS_URL": "redis://r", "IRON_ENV": "production"}
    with pytest.raises(SettingsError, match="IRON_JWT_SECRET"):
        Settings.from_env(base)
    with pytest.raises(SettingsError, match="IRON_MASTER_KEY"):
        Settings.from_env({**base, "IRON_JWT_SECRET": secrets.token_urlsafe(48)})
    with pytest.raises(SettingsError, match="IRON_MASTER_KEY"):
        Settings.from_env(
            {**base, "IRON_JWT_SECRET": secrets.token_urlsafe(48), "IRON_MASTER_KEY": "c2hvcnQ="}
        )
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        Settings.from_env({"REDIS_URL": "redis://r"})


async def test_health_is_200_with_every_service_up(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["services"] == {"database": "healthy", "redis": "healthy"}
    assert response.headers["x-request-id"].startswith("req_")


async def test_health_is_503_naming_the_failed_service(env: dict[str, str]) -> None:
    app = create_app(Settings.from_env({**env, "REDIS_URL": "redis://127.0.0.1:1/0"}))
    started, stop = asyncio.Event(), asyncio.Event()

    async def serve() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    server = asyncio.create_task(serve())
    ready = asyncio.create_task(started.wait())
    await asyncio.wait({server, ready}, return_when=asyncio.FIRST_COMPLETED)
    if server.done():
        server.result()  # start-up failed: raise its error rather than wait forever
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as http:
            response = await http.get("/api/health")
    finally:
        stop.set()
        await server
    assert response.status_code == 503
    body: dict[str, Any] = response.json()
    assert body["services"] == {"database": "healthy", "redis": "unhealthy"}
    assert [error["service"] for error in body["errors"]] == ["redis"]
    assert "127.0.0.1:1" not in response.text  # no connection details leak


async def test_version_and_its_alias(client: httpx.AsyncClient) -> None:
    for path in ("/api/version", "/api/v1/version"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json()["current_version"] == "v1"
        assert response.json()["latest_endpoint"] == "/api/v1"


WHOLE_SETTINGS = (
    "IRON_ACCESS_TOKEN_TTL",
    "IRON_REFRESH_TOKEN_TTL",
    "IRON_LEASE_TTL",
    "IRON_DB_POOL_MIN",
    "IRON_DB_POOL_MAX",
    "IRON_WS_BACKLOG",
    "IRON_USAGE_EVENTS_RETENTION_MONTHS",
)
SECONDS_SETTINGS = (
    "IRON_SWEEP_INTERVAL",
    "IRON_WS_HEARTBEAT_S",
    "IRON_WS_RECHECK_S",
    "IRON_WS_AUTH_TIMEOUT_S",
)
BASE = {"DATABASE_URL": "postgresql://db/x", "REDIS_URL": "redis://r"}


@pytest.mark.parametrize("name", WHOLE_SETTINGS)
@pytest.mark.parametrize("value", ["-1", "1.5", "ten", "1e3", " ", "٣"])
def test_a_bad_whole_number_setting_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name} must be a whole number"):
        Settings.from_env({**BASE, name: value})


@pytest.mark.parametrize("name", SECONDS_SETTINGS)
@pytest.mark.parametrize("value", ["0", "-2", "soon", "nan", "inf", "1e400", "٣"])
def test_a_bad_duration_setting_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name} must be a number of seconds"):
        Settings.from_env({**BASE, name: value})


def test_numeric_settings_read_their_values_and_default_when_empty() -> None:
    given = {
        "IRON_ACCESS_TOKEN_TTL": "2",
        "IRON_LEASE_TTL": "60",
        "IRON_SWEEP_INTERVAL": "0.05",
        "IRON_DB_POOL_MIN": "0",
        "IRON_DB_POOL_MAX": "1",
        "IRON_WS_RECHECK_S": "3600",
        "IRON_WS_BACKLOG": "",
    }
    settings = Settings.from_env({**BASE, **given})
    assert (settings.access_token_ttl_s, settings.lease_ttl_s, settings.sweep_interval_s) == (2, 60, 0.05)
    assert (settings.db_pool_min, settings.db_pool_max, settings.ws_recheck_s) == (0, 1, 3600.0)
    assert settings.ws_backlog == 1000
    with pytest.raises(SettingsError, match=r"^IRON_DB_POOL_MAX must be a whole number, 5 or more"):
        Settings.from_env({**BASE, "IRON_DB_POOL_MIN": "5", "IRON_DB_POOL_MAX": "4"})
    with pytest.raises(SettingsError, match=r"^IRON_DB_POOL_MAX"):
        Settings.from_env({**BASE, "IRON_DB_POOL_MAX": "0"})


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("IRON_LEASE_TTL", "15m", "iron-control-plane: IRON_LEASE_TTL must be a whole number, 1 or more"),
        ("IRON_WS_RECHECK_S", "-1", "iron-control-plane: IRON_WS_RECHECK_S must be a number of seconds"),
        ("IRON_PORT", "http", "argument --port: invalid int value: 'http'"),
    ],
)
def test_the_server_refuses_a_bad_number_in_one_line_without_a_traceback(
    env: dict[str, str], name: str, value: str, says: str
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "control_plane"],
        env={**os.environ, **env, name: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert says in run.stderr
    assert "Traceback" not in run.stderr
