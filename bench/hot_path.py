"""The sidecar's hot path under load: reserve+commit pairs through a real sidecar.

``python -m bench.hot_path`` starts PostgreSQL and Valkey (or uses
``DATABASE_URL`` / ``REDIS_URL``), a control plane and, one after the other, a
sidecar in each reporting mode: ``batched`` (the journal ships usage in the
background) and ``per_request`` (each commit also waits for the control plane,
the seed's pilot variant). Each mode gets the same open-loop load at a fixed
rate and a closed loop at full speed, from the lean generator in
:mod:`bench.loadgen` on the same machine. After each mode the sidecar is
stopped (flushing its journal) and the ledger must hold exactly the committed
costs. Results go to ``bench/results/hot_path.md`` and ``.json``.
"""

import argparse
import asyncio
import json
import os
import platform
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvloop

from bench.loadgen import Connection, closed_loop, open_loop, sidecar_pair, summary
from iron.embedded import default_data_root, free_port, scratch_database, services
from iron.money import charge_micros
from iron.processes import Children, wait_ready

HOST = "127.0.0.1"
ADMIN = ("bench@example.com", secrets.token_urlsafe(16))
COST_USD = 0.001
MODES = ("batched", "per_request")


async def _agent(http: httpx.AsyncClient) -> tuple[str, str]:
    """An agent with budget for any run: (id, IC token)."""
    login = await http.post("/api/v1/auth/login", json={"email": ADMIN[0], "password": ADMIN[1]})
    http.headers["Authorization"] = f"Bearer {login.raise_for_status().json()['user_token']}"
    agent = await http.post("/api/v1/agents", json={"name": "bench", "budget": 1_000_000})
    body = agent.raise_for_status().json()
    return body["id"], body["ic_token"]["token"]


async def _measure(port: int, run: str, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """Warm-up, open loop, closed loop against one sidecar; returns results and pairs committed.

    Each phase has ids of its own: a replayed id would be a (correctly uncharged) duplicate.
    """
    loads = {}
    for phase, conns in (
        ("warm", args.closed_conns),
        ("open", args.open_conns),
        ("closed", args.closed_conns),
    ):
        shape = sidecar_pair(f"{run}-{phase}", COST_USD)
        pool = [await Connection.open(HOST, port, shape) for _ in range(conns)]
        try:
            if phase == "open":
                loads[phase] = await open_loop(pool, args.rate, args.duration)
            else:
                loads[phase] = await closed_loop(pool, 1.0 if phase == "warm" else args.duration)
        finally:
            for conn in pool:
                await conn.close()
    pairs = sum(len(load.latencies) for load in loads.values())
    return {"open": summary(loads["open"]), "closed": summary(loads["closed"])}, pairs


async def _drained(http: httpx.AsyncClient, budget_url: str, timeout_s: float = 300.0) -> float:
    """Seconds until the sidecar's journal is empty: how far reporting fell behind the load."""
    started = time.monotonic()
    while (await http.get(budget_url)).json()["pending_journal"] > 0:
        if time.monotonic() - started > timeout_s:
            break
        await asyncio.sleep(0.1)
    return round(time.monotonic() - started, 2)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="iron-bench-"))
    with services(default_data_root() / "bench") as urls:
        async with scratch_database(urls.database_url, "iron_bench") as database_url:
            with Children(log_dir) as children:  # every child stops before the database goes
                results = await _run(children, urls.redis_url, database_url, args)
    return results


async def _run(
    children: Children, redis_url: str, database_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    cp_port = free_port()
    control_plane = f"http://{HOST}:{cp_port}"
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "IRON_BOOTSTRAP_ADMIN_EMAIL": ADMIN[0],
        "IRON_BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1],
    }
    children.start("control-plane", ["control_plane", "--port", str(cp_port)], env)
    async with httpx.AsyncClient(base_url=control_plane, timeout=30) as http:
        await wait_ready(http, children, "control-plane", f"{control_plane}/api/health")
        agent_id, ic_token = await _agent(http)
        db = await asyncpg.connect(database_url)
        try:
            for mode in MODES:
                port, sidecar = free_port(), f"sidecar-{mode}"
                sidecar_env = {
                    "IRON_CONTROL_PLANE_URL": control_plane,
                    "IRON_IC_TOKEN": ic_token,
                    "REDIS_URL": redis_url,
                    "IRON_SIDECAR_ID": f"bench-{mode}",
                    "IRON_REPORTING": mode,
                    "IRON_LEASE_USD": "1000",
                }
                children.start(sidecar, ["sidecar", "--port", str(port)], sidecar_env)
                await wait_ready(http, children, sidecar, f"http://{HOST}:{port}/healthz")
                before = await db.fetchval("SELECT spent_micros FROM agents WHERE id = $1", agent_id)
                measured, pairs = await _measure(port, f"{mode}-{secrets.token_hex(3)}", args)
                measured["drain_s"] = await _drained(http, f"http://{HOST}:{port}/v1/budget")
                exit_codes = children.stop([sidecar])  # returns the lease
                after = await db.fetchval("SELECT spent_micros FROM agents WHERE id = $1", agent_id)
                measured["pairs_committed"] = pairs
                measured["ledger_spent_micros"] = after - before
                measured["ledger_exact"] = after - before == pairs * charge_micros(COST_USD)
                measured["clean_exit"] = exit_codes[sidecar] == 0
                results[mode] = measured
        finally:
            await db.close()
    return results


def _markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    batched = results["batched"]
    lines = [
        "# Sidecar hot path: reserve + commit pairs",
        "",
        f"`python -m bench.hot_path --duration {args.duration:g} --rate {args.rate:g}`: real control plane, "
        "PostgreSQL, Redis and sidecar; the load generator runs on the same machine. "
        f"Open loop: {args.rate:g} pairs/s over {args.open_conns} connections; closed loop: "
        f"{args.closed_conns} connections back to back. Latencies in ms per pair.",
        "",
        "| reporting | open p50 | p90 | p99 | p99.9 | closed pairs/s | closed p50 | closed p99 "
        "| open p50 vs batched | journal drained after | ledger exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in results.items():
        o, c = r["open"], r["closed"]
        lines.append(
            f"| {mode} | {o['p50_ms']:.3f} | {o['p90_ms']:.3f} | {o['p99_ms']:.3f} | {o['p99.9_ms']:.3f} "
            f"| {c['pairs_per_s']:,.0f} | {c['p50_ms']:.3f} | {c['p99_ms']:.3f} "
            f"| {o['p50_ms'] / batched['open']['p50_ms']:.1f}x | {r['drain_s']:.1f} s "
            f"| {'yes' if r['ledger_exact'] else 'NO'} |"
        )
    lines += ["", f"Python {platform.python_version()}, {os.cpu_count()} CPUs."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hot_path", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load shape (default 5)")
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop pairs/s (default 1000)")
    parser.add_argument("--open-conns", type=int, default=16)
    parser.add_argument("--closed-conns", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    results = uvloop.run(bench(args))
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = _markdown(results, args)
    (args.out / "hot_path.md").write_text(markdown)
    (args.out / "hot_path.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown)
    return 0 if all(r["ledger_exact"] and r["clean_exit"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
