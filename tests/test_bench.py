"""The hot-path benchmark runs end to end and writes well-formed results (never a timing assertion)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.hot_path import TARGETS
from iron.embedded import ServiceUrls


def test_hot_path_runner_writes_every_target_and_the_ledgers_are_exact(
    tmp_path: Path, service_urls: ServiceUrls
) -> None:
    env = {**os.environ, "DATABASE_URL": service_urls.database_url, "REDIS_URL": service_urls.redis_url}
    argv = ["-m", "bench.hot_path", "--duration", "0.5", "--rate", "200", "--out", str(tmp_path)]
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout.decode()[-2000:] + done.stderr.decode()[-2000:]
    results = json.loads((tmp_path / "hot_path.json").read_text())
    targets = results["targets"]
    assert list(targets) == ["sidecar", "sidecar_unix", "per_request", "noop", "redis"]
    for name in ("sidecar", "sidecar_unix", "per_request", "redis"):  # money moved: the ledger is exact
        assert targets[name]["ledger_exact"] is True, name
        assert targets[name]["pairs_committed"] > 0
        assert targets[name]["ledger_spent_micros"] == targets[name]["pairs_committed"] * 1000
    for name in ("sidecar", "sidecar_unix", "per_request", "noop"):
        assert targets[name]["clean_exit"] is True, name
    for name, result in targets.items():
        for shape in ("open", "closed"):
            figures = result[shape]
            assert figures["pairs"] > 0, (name, shape)
            assert 0 < figures["p50_ms"] <= figures["p90_ms"] <= figures["p99_ms"] <= figures["p99.9_ms"]
            assert figures["cpu_us_per_pair"]["loadgen"] > 0  # the generator's own CPU is accounted
        assert "server" in result["closed"]["cpu_us_per_pair"] or name == "redis"
    assert set(results["vs_sidecar"]) == set(TARGETS)
    assert results["vs_sidecar"]["sidecar"] == {"open_p50": 1.0, "open_p99": 1.0, "closed_pairs_per_s": 1.0}
    goals = {goal["goal"]: goal for goal in results["goals"]}
    assert len(goals) == 5
    assert all(isinstance(goal["met"], bool) for goal in goals.values())
    bound = results["cpu_bound"]  # what caps the share of the no-op, from the same run's CPU figures
    parts = ("pairs_per_s", "server_us", "script_client_us", "redis_us", "loadgen_us")
    assert min(bound[part] for part in parts) > 0
    floor = results["latency_floor"]  # the p50 of the round trips a pair makes, before sidecar code
    noop, redis = results["targets"]["noop"]["open"], results["targets"]["redis"]["open"]
    assert floor["p50_ms"] == round(noop["p50_ms"] + redis["p50_ms"], 3)
    table = (tmp_path / "hot_path.md").read_text()
    assert "What bounds the share of the no-op" in table
    assert "What bounds the p50" in table
    for label in TARGETS.values():
        assert f"| {label} |" in table
