"""The analytics benchmark runs end to end at a tiny scale and writes well-formed results (no timing
is asserted: the benchmark measures, the suite only checks that it can)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.analytics import ENDPOINTS
from iron.embedded import ServiceUrls


def test_the_analytics_benchmark_writes_its_results(tmp_path: Path, service_urls: ServiceUrls) -> None:
    env = {**os.environ, "DATABASE_URL": service_urls.database_url, "REDIS_URL": service_urls.redis_url}
    tiny = ["--events", "3000", "--agents", "20", "--days", "3", "--users", "2", "--repeat", "1"]
    ingest = ["--ingest-clients", "2", "--ingest-batches", "2", "--batch", "100"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.analytics", *tiny, *ingest, "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode()[-2000:] + done.stderr.decode()[-2000:]
    results = json.loads((tmp_path / "analytics.json").read_text())
    assert results["load"]["events"] == 3000
    assert results["load"]["all_time_requests_match"] is True
    assert results["load"]["rollup_rows"] > 0
    assert set(results["queries"]) == set(ENDPOINTS)
    for endpoint in results["queries"].values():
        assert endpoint["requests"] == len(endpoint["scenarios"]) > 10
        assert 0 < endpoint["p50_ms"] <= endpoint["p95_ms"]
        assert endpoint["worst_scenario"] in endpoint["scenarios"]
    ingestion = results["ingestion"]
    assert (ingestion["events"], ingestion["statuses"]) == (400, {"202": 4})
    assert ingestion["events_per_s"] > 0
    assert set(results["targets"]) == {
        "query_p95_ms",
        "worst_query_p95_ms",
        "queries_met",
        "ingest_events_per_s",
        "ingestion_met",
    }
    table = (tmp_path / "analytics.md").read_text()
    assert all(f"| {endpoint} |" in table for endpoint in ENDPOINTS)
