"""The benchmark summary: one markdown file from the results files, and the same in README.md.

Everything here reads files that the runs left in the results folder, so the
summary (and the README's copy of it) can be re-rendered at any time without
running anything: ``python -m bench readme``.
"""

import csv
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

SCENARIOS = ("runtime", "admin", "dashboard")
#: The columns of locust's ``*_stats.csv`` that the summary reads.
STATS_COLUMNS = (
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Requests/s",
    "50%",
    "95%",
    "99%",
    "100%",
)
FAILURES_COLUMNS = ("Method", "Name", "Error", "Occurrences")
EXCEPTIONS_COLUMNS = ("Count", "Message", "Traceback", "Nodes")
README_START = "<!-- bench-summary:start (python -m bench readme) -->"
README_END = "<!-- bench-summary:end -->"


def read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of a locust CSV; a file without the expected columns is an error, not an empty table."""
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        missing = set(columns) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path.name} lacks the columns {sorted(missing)}")
        return list(reader)


def stats_path(out: Path, scenario: str) -> Path:
    return out / f"locust_{scenario}_stats.csv"


def failures_path(out: Path, scenario: str) -> Path:
    return out / f"locust_{scenario}_failures.csv"


def committed_pairs(out: Path) -> int:
    """Commits the runtime scenario's users saw charged: locust's successful ``commit`` requests."""
    for row in read_csv(stats_path(out, "runtime"), STATS_COLUMNS):
        if row["Name"] == "/v1/commit":
            return int(row["Request Count"]) - int(row["Failure Count"])
    return 0


def _ms(value: str) -> str:
    return value if value == "N/A" else f"{float(value):,.0f}"


def _scenario_rows(out: Path, scenario: str) -> list[str]:
    rows = []
    for row in read_csv(stats_path(out, scenario), STATS_COLUMNS):
        name = "**all**" if row["Name"] == "Aggregated" else f"{row['Type']} {row['Name']}"
        rows.append(
            f"| {scenario} | {name} | {int(row['Request Count']):,} | {int(row['Failure Count']):,} "
            f"| {float(row['Requests/s']):,.1f} | {_ms(row['50%'])} | {_ms(row['95%'])} "
            f"| {_ms(row['99%'])} | {_ms(row['100%'])} |"
        )
    return rows


def _failure_rows(out: Path, scenario: str) -> list[str]:
    path = failures_path(out, scenario)
    if not path.exists():
        return []
    return [
        f"| {scenario} | {row['Method']} {row['Name']} | {row['Error'].replace('|', '/')} "
        f"| {int(row['Occurrences']):,} |"
        for row in read_csv(path, FAILURES_COLUMNS)
    ]


def _exception_rows(out: Path, scenario: str) -> list[str]:
    """Errors raised in the scenario's own code (a reply it could not read, ...): count and message;
    the tracebacks stay in the CSV, which is not committed (it names local paths)."""
    path = out / f"locust_{scenario}_exceptions.csv"
    if not path.exists():
        return []
    return [
        f"| {scenario} | {row['Message'].replace('|', '/')} | {int(row['Count']):,} |"
        for row in read_csv(path, EXCEPTIONS_COLUMNS)
    ]


def _hot_path_section(out: Path) -> list[str]:
    """``hot_path.md`` (bench.hot_path's own report) under a heading of ours."""
    path = out / "hot_path.md"
    if not path.exists():
        return ["## Sidecar hot path", "", "Not run (`python -m bench all` runs it).", ""]
    lines = path.read_text().splitlines()
    body = [f"#{line}" if line.startswith("#") else line for line in lines[1:]]  # one level down
    return ["## Sidecar hot path (`python -m bench.hot_path`)", *body, ""]


def _ledger_line(ledger: dict[str, Any]) -> str:
    verdict = "exact" if ledger["exact"] else "MISMATCH"
    return (
        f"Ledger after the runtime scenario (sidecars stopped: journals flushed, leases returned): "
        f"{ledger['commits']:,} charged commits x ${ledger['cost_usd']} = {ledger['expected_micros']:,} "
        f"microdollars expected; the control plane holds {ledger['spent_micros']:,} spent and "
        f"{ledger['outstanding_micros']:,} outstanding: **{verdict}**."
    )


def render(out: Path) -> str:
    """The summary markdown from the results in ``out``."""
    run = json.loads((out / "locust.json").read_text())
    settings = run["settings"]
    lines = [
        "# Benchmarks",
        "",
        f"One machine ({os.cpu_count()} CPUs, Python {platform.python_version()}): the load generators "
        "share the cores with the control plane, sidecars, PostgreSQL and Redis they measure.",
        "",
        *_hot_path_section(out),
        "## Locust scenarios (`python -m bench locust`)",
        "",
        f"Each scenario alone for {settings['duration_s']:g} s, users started at "
        f"{settings['spawn_rate']:g} a second: runtime {settings['users']['runtime']} users (reserve, "
        f"simulated LLM call of {settings['llm_latency_ms'][0]}-{settings['llm_latency_ms'][1]} ms, "
        f"commit; on {settings['sidecars']} sidecars), admin {settings['users']['admin']} users (REST "
        f"API, 0.2-1 s think time), dashboard {settings['users']['dashboard']} users (the agent table "
        "and analytics every 2 s). Latencies in ms as locust reports them (rounded to 2 significant "
        "digits above 100 ms).",
        "",
        "| scenario | request | requests | failures | req/s | p50 | p95 | p99 | max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        lines += _scenario_rows(out, scenario)
    failures = [row for scenario in SCENARIOS for row in _failure_rows(out, scenario)]
    if failures:
        lines += [
            "",
            "Failures by endpoint:",
            "",
            "| scenario | request | error | count |",
            "|---|---|---|---|",
        ]
        lines += failures
    exceptions = [row for scenario in SCENARIOS for row in _exception_rows(out, scenario)]
    if exceptions:
        lines += ["", "Errors in the scenarios' own code:", ""]
        lines += ["| scenario | error | count |", "|---|---|---|"]
        lines += exceptions
    lines += ["", _ledger_line(run["ledger"])]
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, summary: str) -> bool:
    """Replace the block between the README's markers with the summary (less its title); False
    if the README has no such block."""
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(text):
        return False
    body = summary.split("\n", 2)[2]  # without "# Benchmarks" and the blank line after it
    body = re.sub(r"^#", "##", body, flags=re.MULTILINE)  # under the README's own section
    block = f"{README_START}\n{body}{README_END}"
    readme.write_text(pattern.sub(lambda _: block, text))
    return True
