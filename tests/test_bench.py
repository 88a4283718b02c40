"""The hot-path benchmark runs end to end and writes well-formed results (never a timing assertion)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from iron.embedded import ServiceUrls


def test_hot_path_runner_writes_results_and_the_ledger_is_exact(
    tmp_path: Path, service_urls: ServiceUrls
) -> None:
    env = {**os.environ, "DATABASE_URL": service_urls.database_url, "REDIS_URL": service_urls.redis_url}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.hot_path",
            "--duration",
            "0.5",
            "--rate",
            "200",
            "--out",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode()[-2000:] + done.stderr.decode()[-2000:]
    results = json.loads((tmp_path / "hot_path.json").read_text())
    assert set(results) == {"batched", "per_request"}
    for mode in results.values():
        assert mode["ledger_exact"] is True
        assert mode["clean_exit"] is True
        assert mode["pairs_committed"] > 0
        for shape in ("open", "closed"):
            assert mode[shape]["pairs"] > 0
            assert 0 < mode[shape]["p50_ms"] <= mode[shape]["p99_ms"]
    table = (tmp_path / "hot_path.md").read_text()
    assert "| batched |" in table
    assert "| per_request |" in table
