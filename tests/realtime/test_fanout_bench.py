"""The fan-out benchmark end to end at a tiny scale: well-formed results, no timing assertion."""

import json
import os
import subprocess
import sys
from pathlib import Path

from iron.embedded import ServiceUrls


def test_fanout_benchmark_delivers_every_report_to_every_client(
    tmp_path: Path, service_urls: ServiceUrls
) -> None:
    env = {**os.environ, "DATABASE_URL": service_urls.database_url, "REDIS_URL": service_urls.redis_url}
    argv = [sys.executable, "-m", "bench.ws_fanout", "--clients", "6", "--reports", "4", "--interval", "0.05"]
    done = subprocess.run(
        [*argv, "--out", str(tmp_path)], env=env, capture_output=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout.decode()[-2000:] + done.stderr.decode()[-2000:]
    results = json.loads((tmp_path / "ws_fanout.json").read_text())
    assert results["deliveries"] == results["deliveries_expected"] == 24
    assert results["complete_clients"] == 6
    assert 0 < results["p50_ms"] <= results["p99_ms"] <= results["max_ms"]
    assert "| 24 of 24 |" in (tmp_path / "ws_fanout.md").read_text()
