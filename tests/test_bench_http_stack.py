"""``python -m bench.http_stack`` in miniature: the sidecar's own server gets a well-formed row, and
a stack whose server is not installed gets a row saying so instead of failing the run.

Never a timing assertion: the figures are whatever this machine gives in a fraction of a second.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iron.embedded import ServiceUrls

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = 14  # stack, variant, 4 open-loop latencies, 3 closed-loop figures, 3 CPU, other load, target


def table_rows(markdown: str) -> dict[tuple[str, str], list[str]]:
    """The results table's rows by (stack, variant), each as its cells."""
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("| ")]
    assert rows, markdown
    assert all(len(cells) == COLUMNS for cells in rows), rows
    return {(cells[0].strip(), cells[1].strip()): [cell.strip() for cell in cells] for cells in rows[1:]}


def test_the_sidecar_server_is_measured_and_a_missing_stack_reported(
    tmp_path: Path, service_urls: ServiceUrls
) -> None:
    chosen = ["--stacks", "sidecar-http,asgi-granian", "--variants", "noop"]
    tiny = ["--duration", "0.2", "--rate", "100", "--open-conns", "2", "--closed-conns", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.http_stack", *chosen, *tiny, "--out", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": service_urls.redis_url},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode()[-3000:] + done.stderr.decode()[-3000:]

    rows = table_rows((tmp_path / "http_stack.md").read_text())
    sidecar = rows.pop(("sidecar-http", "noop"))
    figures = [float(cell.replace(",", "")) for cell in sidecar[2:-1]]
    assert figures[4] > 0, sidecar  # closed-loop pairs/s: the server answered
    assert sidecar[-1] == "-"  # a no-op row is not held to the target
    report = json.loads((tmp_path / "http_stack.json").read_text())
    measured = {(r["stack"], r["variant"]) for r in report["results"]}
    if importlib.util.find_spec("granian") is None:
        assert rows == {("asgi-granian", "not installed"): ["asgi-granian", "not installed"] + ["-"] * 12}
        assert report["not_installed"] == ["asgi-granian"]
        assert measured == {("sidecar-http", "noop")}
        assert report["environment"]["packages"]["granian"] == "not installed"
    else:
        assert set(rows) == {("asgi-granian", "noop")}
        assert report["not_installed"] == []
        assert measured == {("sidecar-http", "noop"), ("asgi-granian", "noop")}
