"""``python -m bench all`` end to end with a tiny load: well-formed results files, an exact ledger.

Never a timing assertion: the figures are whatever this machine gives; what is checked
is that every file is there, has the expected shape, and agrees with the others. (Nothing
here imports a locustfile: locust patches the standard library for gevent on import.)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.hot_path import TARGETS
from bench.summary import (
    EXCEPTIONS_COLUMNS,
    FAILURES_COLUMNS,
    README_END,
    README_START,
    SCENARIOS,
    STATS_COLUMNS,
    read_csv,
    update_readme,
)
from iron.embedded import ServiceUrls

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_REQUESTS = {
    "runtime": {"/v1/reserve", "/v1/commit"},
    "admin": {"/api/v1/auth/login", "/api/v1/agents"},  # on start; its tasks are picked at random
    "dashboard": {"/api/v1/auth/login", "/api/v1/agents", "/api/v1/analytics/spending/total"},
}


@pytest.mark.slow
def test_the_runner_writes_every_results_file_and_the_ledger_is_exact(
    tmp_path: Path, service_urls: ServiceUrls
) -> None:
    readme_before = (ROOT / "README.md").read_text()
    env = {**os.environ, "DATABASE_URL": service_urls.database_url, "REDIS_URL": service_urls.redis_url}
    tiny = ["--duration", "3", "--runtime-users", "2", "--admin-users", "1", "--dashboard-users", "1"]
    hot_path = ["--hot-path-duration", "0.3", "--hot-path-rate", "100"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "all", *tiny, *hot_path, "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode()[-3000:] + done.stderr.decode()[-3000:]

    for scenario in SCENARIOS:
        rows = read_csv(tmp_path / f"locust_{scenario}_stats.csv", STATS_COLUMNS)
        names = {row["Name"] for row in rows}
        assert EXPECTED_REQUESTS[scenario] <= names, (scenario, names)
        if scenario == "dashboard":  # each analytics endpoint is its own row, answered or not
            assert len({name for name in names if name.startswith("/api/v1/analytics/")}) == 5, names
        assert rows[-1]["Name"] == "Aggregated"
        assert int(rows[-1]["Request Count"]) == sum(int(row["Request Count"]) for row in rows[:-1])
        failures = read_csv(tmp_path / f"locust_{scenario}_failures.csv", FAILURES_COLUMNS)
        failed = {(row["Method"], row["Name"]): int(row["Occurrences"]) for row in failures}
        for row in rows[:-1]:  # the failures file accounts for every failed request
            request = (row["Type"], row["Name"])
            assert failed.get(request, 0) == int(row["Failure Count"]), (scenario, request)
        # the scenario's own code read every reply it got (a reply off the contract raises there)
        assert read_csv(tmp_path / f"locust_{scenario}_exceptions.csv", EXCEPTIONS_COLUMNS) == [], scenario
    runtime = read_csv(tmp_path / "locust_runtime_stats.csv", STATS_COLUMNS)
    assert all(row["Failure Count"] == "0" for row in runtime), runtime

    results = json.loads((tmp_path / "locust.json").read_text())
    assert results["exit_codes"]["runtime"] == 0  # the others fail on analytics until it exists
    assert set(results["exit_codes"]) == set(SCENARIOS)
    ledger = results["ledger"]
    commits = next(int(row["Request Count"]) for row in runtime if row["Name"] == "/v1/commit")
    assert ledger["commits"] == commits > 0
    assert ledger["exact"] is True
    assert ledger["spent_micros"] == ledger["expected_micros"] == commits * 1000  # $0.001 a call
    assert ledger["outstanding_micros"] == 0

    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# Benchmarks\n")
    assert f"| {TARGETS['sidecar']} |" in summary  # the hot path's own table, from hot_path.md
    assert "| scenario | request | requests | failures | req/s | p50 | p95 | p99 | max |" in summary
    for scenario in SCENARIOS:
        assert f"| {scenario} | **all** |" in summary
    assert "**exact**" in summary
    assert (ROOT / "README.md").read_text() == readme_before  # only the repository's results go there


def test_the_readme_block_is_replaced_and_nothing_else(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Project\n\n## Benchmarks\n\nintro\n\n{README_START}\nold table\n{README_END}\n\n## Next\n"
    )
    summary = "# Benchmarks\n\nOne machine.\n\n## Locust scenarios\n\n| a |\n"
    assert update_readme(readme, summary)
    assert readme.read_text() == (
        f"# Project\n\n## Benchmarks\n\nintro\n\n{README_START}\n"
        f"One machine.\n\n### Locust scenarios\n\n| a |\n{README_END}\n\n## Next\n"
    )
    plain = tmp_path / "PLAIN.md"
    plain.write_text("# Project\n")
    assert not update_readme(plain, summary)
    assert plain.read_text() == "# Project\n"


def test_a_results_file_without_the_expected_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "locust_runtime_stats.csv"
    path.write_text("Type,Name,Request Count\nPOST,/v1/reserve,3\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        read_csv(path, STATS_COLUMNS)
