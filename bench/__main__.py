"""``python -m bench``: the benchmarks in one command, results under ``bench/results/``.

    python -m bench all      the sidecar hot path (bench.hot_path), then the locust scenarios
    python -m bench locust   the locust scenarios alone
    python -m bench readme   re-render summary.md and README.md's copy from the results files
    python -m bench seed     (docker compose) create the provider and agents, write their IC tokens

The locust scenarios (``bench/locustfiles``) run one after the other, each headless in
its own locust process with fixed users, spawn rate and duration, against a real
control plane, one sidecar per runtime agent, PostgreSQL and Redis (the environment's
``DATABASE_URL`` / ``REDIS_URL``, else embedded servers). After the runtime scenario the
sidecars stop (flushing their journals, returning their leases) and the ledger must
hold exactly what the runtimes' charged commits cost. A scenario's failures are counted
per endpoint in the results; only a run that produced no results, or a wrong ledger,
fails the command.
"""

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import hot_path
from bench.summary import SCENARIOS, committed_pairs, render, update_readme
from iron.demo import NAMES, AgentRun, _budgets, admin_credentials, set_up
from iron.embedded import default_data_root, free_port, scratch_database, services
from iron.fake_llm import API_KEY_ENV
from iron.money import charge_micros, grant_micros
from iron.processes import Children, start_control_planes, wait_ready

HOST = "127.0.0.1"
RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parents[1] / "README.md"
LOCUSTFILES = Path(__file__).resolve().parent / "locustfiles"
RUNTIME_AGENT_USD = 1_000_000  # never the limit: the scenario measures speed, not refusals
LOCUST_GRACE_S = 60  # start-up and the last tasks' completion, beyond the run time
LOCUST_DONE = (0, 1)  # locust's exit codes for a completed run, without and with failed requests


def _admin_env() -> dict[str, str]:
    email, password = admin_credentials()
    return {"IRON_BOOTSTRAP_ADMIN_EMAIL": email, "IRON_BOOTSTRAP_ADMIN_PASSWORD": password}


async def _locust(scenario: str, host: str, args: argparse.Namespace, log_dir: Path, *extra: str) -> int:
    """One headless locust run of ``scenario``; its CSVs go to ``args.out``; locust's exit code."""
    command = [
        *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILES / f"{scenario}.py"), "--headless"),
        *("--users", str(getattr(args, f"{scenario}_users")), "--spawn-rate", f"{args.spawn_rate:g}"),
        *("--run-time", f"{args.duration}s", "--stop-timeout", "10", "--host", host),
        *("--csv", str(args.out / f"locust_{scenario}"), "--only-summary", "--loglevel", "WARNING"),
        *("--llm-latency-ms", *map(str, args.llm_latency_ms), "--cost-usd", repr(args.cost_usd)),
        *extra,
    ]
    with (log_dir / f"locust-{scenario}.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *command, env={**os.environ, **_admin_env()}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            return await asyncio.wait_for(proc.wait(), args.duration + LOCUST_GRACE_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return -9


async def _ledger(database_url: str, agent_ids: list[str], commits: int, cost_usd: float) -> dict[str, Any]:
    connection = await asyncpg.connect(database_url)
    try:
        totals = await connection.fetchrow(
            "SELECT coalesce(sum(spent_micros), 0)::bigint AS spent,"
            " coalesce(sum(outstanding_micros), 0)::bigint AS outstanding"
            " FROM agents WHERE id = ANY($1::text[])",
            agent_ids,
        )
        assert totals is not None  # an aggregate has one row
        spent, outstanding = totals["spent"], totals["outstanding"]
    finally:
        await connection.close()
    expected = commits * charge_micros(cost_usd)
    return {
        "commits": commits,
        "cost_usd": cost_usd,
        "expected_micros": expected,
        "spent_micros": spent,
        "outstanding_micros": outstanding,
        "exact": commits > 0 and spent == expected and outstanding == 0,
    }


async def _start(
    children: Children, redis_url: str, database_url: str, sidecars: int
) -> tuple[str, list[AgentRun]]:
    """A control plane, the runtime agents (seeded as the demo seeds them) and a sidecar for each."""
    # locust's admin and dashboard users share one admin account: the per-user limits would
    # measure the limiter, which has tests of its own
    no_limits = {"IRON_RATE_LIMITS": "off"}
    (control_plane,) = await start_control_planes(
        children, database_url, redis_url, admin_credentials(), settings=no_limits
    )
    agents = [AgentRun(NAMES[n], grant_micros(RUNTIME_AGENT_USD)) for n in range(sidecars)]
    async with httpx.AsyncClient(base_url=control_plane, timeout=30) as http:
        # the provider is never called: the runtime scenario simulates the LLM
        await set_up(http, "http://fake-llm.invalid/v1", "sk-bench-unused", secrets.token_hex(3), agents)
        for agent in agents:
            port = free_port()
            agent.sidecar_url = f"http://{HOST}:{port}"
            sidecar_env = {"IRON_CONTROL_PLANE_URL": control_plane, "IRON_IC_TOKEN": agent.ic_token}
            sidecar_env |= {"REDIS_URL": redis_url, "IRON_LEASE_USD": "100"}
            children.start(f"sidecar-{agent.name}", ["sidecar", "--port", str(port)], sidecar_env)
        for agent in agents:
            await wait_ready(http, children, f"sidecar-{agent.name}", f"{agent.sidecar_url}/healthz")
    return control_plane, agents


async def _scenarios(
    children: Children, redis_url: str, database_url: str, args: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    """Each scenario in turn; between the runtime scenario and the others, the ledger check."""
    control_plane, agents = await _start(children, redis_url, database_url, args.sidecars)
    urls = ",".join(agent.sidecar_url for agent in agents)
    codes = {
        "runtime": await _locust("runtime", agents[0].sidecar_url, args, log_dir, "--sidecar-urls", urls)
    }
    stopped = await asyncio.to_thread(children.stop, [f"sidecar-{agent.name}" for agent in agents])
    commits = committed_pairs(args.out) if codes["runtime"] in LOCUST_DONE else 0
    ledger = await _ledger(database_url, [agent.id for agent in agents], commits, args.cost_usd)
    ledger["sidecars_stopped_cleanly"] = all(code == 0 for code in stopped.values())
    for scenario in ("admin", "dashboard"):
        codes[scenario] = await _locust(scenario, control_plane, args, log_dir)
    return {"exit_codes": codes, "ledger": ledger}


async def _run_locust(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    with services(default_data_root() / "bench") as urls:
        async with scratch_database(urls.database_url, "iron_bench") as database_url:
            with Children(log_dir) as children:  # every child stops before the database goes
                return await _scenarios(children, urls.redis_url, database_url, args, log_dir)


def locust(args: argparse.Namespace) -> int:
    """The locust scenarios; writes locust.json, the CSVs and the summary; 0 if all is well."""
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="iron-bench-locust-"))
    print(f"process logs in {log_dir}", file=sys.stderr)
    results = asyncio.run(_run_locust(args, log_dir))
    results["settings"] = {
        "duration_s": args.duration,
        "spawn_rate": args.spawn_rate,
        "users": {scenario: getattr(args, f"{scenario}_users") for scenario in SCENARIOS},
        "llm_latency_ms": args.llm_latency_ms,
        "cost_usd": args.cost_usd,
        "sidecars": args.sidecars,
    }
    (args.out / "locust.json").write_text(json.dumps(results, indent=2) + "\n")
    broken = {s: code for s, code in results["exit_codes"].items() if code not in LOCUST_DONE}
    if broken:
        print(f"locust exit codes {broken}; logs in {log_dir}", file=sys.stderr)
        return 1
    ledger = results["ledger"]
    return readme(args) or (0 if ledger["exact"] and ledger["sidecars_stopped_cleanly"] else 1)


def readme(args: argparse.Namespace) -> int:
    """summary.md from the results files; README.md's copy too when they are the repository's."""
    summary = render(args.out)
    (args.out / "summary.md").write_text(summary)
    print(summary)
    if args.out.resolve() == RESULTS and not update_readme(README, summary):
        print("README.md has no benchmark block to update", file=sys.stderr)
        return 1
    return 0


def run_all(args: argparse.Namespace) -> int:
    hot = hot_path.main(
        [
            "--duration",
            f"{args.hot_path_duration:g}",
            "--rate",
            f"{args.hot_path_rate:g}",
            "--out",
            str(args.out),
        ]
    )
    return locust(args) or hot


async def _seed(args: argparse.Namespace) -> int:
    tokens = {NAMES[n]: args.tokens_dir / f"{NAMES[n]}.token" for n in range(len(args.budgets))}
    if all(path.exists() for path in tokens.values()):
        print(f"already seeded: {', '.join(map(str, tokens.values()))}")
        return 0
    provider_key = os.environ.get(API_KEY_ENV)
    if not provider_key:
        print(f"bench seed: {API_KEY_ENV} is not set", file=sys.stderr)
        return 2
    agents = [AgentRun(NAMES[n], budget) for n, budget in enumerate(args.budgets)]
    async with httpx.AsyncClient(base_url=args.control_plane, timeout=30) as http:
        await set_up(http, args.provider_url, provider_key, secrets.token_hex(3), agents)
    args.tokens_dir.mkdir(parents=True, exist_ok=True)
    for agent in agents:
        staged = tokens[agent.name].with_suffix(".tmp")  # a reader never sees half a token
        staged.write_text(agent.ic_token + "\n")
        staged.chmod(0o600)
        staged.replace(tokens[agent.name])
        print(f"agent {agent.name} ({agent.id}): IC token in {tokens[agent.name]}")
    return 0


def seed(args: argparse.Namespace) -> int:
    return asyncio.run(_seed(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    load = argparse.ArgumentParser(add_help=False, parents=[out])
    load.add_argument("--duration", type=int, default=30, help="seconds per scenario (default 30)")
    load.add_argument("--spawn-rate", type=float, default=10.0, help="users started per second (default 10)")
    load.add_argument("--runtime-users", type=int, default=20)
    load.add_argument("--admin-users", type=int, default=5)
    load.add_argument("--dashboard-users", type=int, default=10)
    load.add_argument("--sidecars", type=int, default=2, choices=range(1, len(NAMES) + 1), metavar="N")
    load.add_argument("--llm-latency-ms", type=int, nargs=2, default=[50, 150], metavar=("LOW", "HIGH"))
    load.add_argument("--cost-usd", type=float, default=0.001, help="per simulated LLM call")
    run = commands.add_parser("all", parents=[load], help="the hot path, then the locust scenarios")
    run.add_argument("--hot-path-duration", type=float, default=5.0, help="seconds per load shape")
    run.add_argument("--hot-path-rate", type=float, default=1000.0, help="open-loop pairs/s")
    run.set_defaults(handler=run_all)
    commands.add_parser("locust", parents=[load], help="the locust scenarios").set_defaults(handler=locust)
    commands.add_parser("readme", parents=[out], help="re-render the summary").set_defaults(handler=readme)
    sow = commands.add_parser("seed", help="create a provider and agents; write their IC tokens to files")
    sow.add_argument("--control-plane", required=True, help="the control plane's base URL")
    sow.add_argument(
        "--provider-url", required=True, help=f"the LLM provider's base URL; key from {API_KEY_ENV}"
    )
    sow.add_argument("--budgets", type=_budgets, default=_budgets("5,8"), help="USD per agent (5,8)")
    sow.add_argument("--tokens-dir", type=Path, required=True, help="<agent name>.token per agent")
    sow.set_defaults(handler=seed)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
