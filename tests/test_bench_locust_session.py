"""The locust users' shared admin session outlives its access token: a 401 renews it and retries.

A real control plane whose access tokens last 2 s, and one dashboard viewer polling every 2 s
for 7 s: each poll after the first meets an expired token. (Nothing here imports a locustfile:
locust patches the standard library for gevent on import.)
"""

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.summary import EXCEPTIONS_COLUMNS, FAILURES_COLUMNS, STATS_COLUMNS, read_csv
from iron.embedded import free_port
from tests.sidecar.fault_processes import REPO_ROOT, ServerProcess, control_plane_argv

pytestmark = pytest.mark.slow

LOCUST_TIMEOUT_S = 90


async def test_an_expired_access_token_is_renewed_once_and_the_request_retried(
    tmp_path: Path, env: dict[str, str], client: Any
) -> None:
    port = free_port()  # `client`: the test database is migrated before this process starts
    control_plane = ServerProcess(
        "control-plane",
        control_plane_argv(port),
        {**env, "IRON_ACCESS_TOKEN_TTL": "2"},
        port,
        tmp_path,
        "/api/health",
    )
    await control_plane.start_ready()
    try:
        locust = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "locust", "-f", str(REPO_ROOT / "bench/locustfiles/dashboard.py")),
            *("--headless", "--users", "1", "--spawn-rate", "1", "--run-time", "7s", "--stop-timeout", "10"),
            *("--host", control_plane.url, "--csv", str(tmp_path / "dashboard"), "--only-summary"),
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(locust.communicate(), LOCUST_TIMEOUT_S)
        finally:
            if locust.returncode is None:
                locust.kill()
                await locust.wait()
    finally:
        await asyncio.to_thread(control_plane.cleanup)
    assert locust.returncode in (0, 1), output.decode()[-3000:]  # 1: some requests failed

    rows = {row["Name"]: row for row in read_csv(tmp_path / "dashboard_stats.csv", STATS_COLUMNS)}
    assert "/api/v1/auth/refresh" in rows, f"the session was never renewed: {sorted(rows)}"
    login, refresh = rows.pop("/api/v1/auth/login"), rows.pop("/api/v1/auth/refresh")
    del rows["Aggregated"]
    assert (login["Request Count"], login["Failure Count"]) == ("1", "0")  # renewed, never logged in again
    refreshes = int(refresh["Request Count"])
    assert (refreshes >= 1, refresh["Failure Count"]) == (True, "0")
    # every poll read each endpoint once, the request refused for its stale token retried
    answered = {name: int(row["Request Count"]) - int(row["Failure Count"]) for name, row in rows.items()}
    assert len(answered) == 6, rows
    assert len(set(answered.values())) == 1, rows
    failures = read_csv(tmp_path / "dashboard_failures.csv", FAILURES_COLUMNS)
    assert all("401" in row["Error"] for row in failures), failures
    assert sum(int(row["Occurrences"]) for row in failures) == refreshes  # one user: one 401, one renewal
    assert read_csv(tmp_path / "dashboard_exceptions.csv", EXCEPTIONS_COLUMNS) == []
