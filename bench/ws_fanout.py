"""Fan-out of the ``/ws`` feed: delay from a usage report to its AGENT_EVENT at every connected client.

``python -m bench.ws_fanout`` starts PostgreSQL and Valkey (or uses
``DATABASE_URL`` / ``REDIS_URL``), control-plane replicas, and client processes
holding ``--clients`` sockets spread over the replicas, all signed in as an
admin. Once every socket has its STATE_UPDATE, it posts ``--reports`` usage
reports (budget protocol, over HTTP), one every ``--interval`` seconds,
alternating between replicas, so every message crosses Redis pub/sub to reach
the sockets of both replicas. The delay of one delivery is from just before
the report's request is sent to the message's arrival at one client (all
processes read the same monotonic clock). Results go to
``bench/results/ws_fanout.md`` and ``.json``.
"""

import argparse
import asyncio
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import uvloop

from iron import feed
from iron.embedded import default_data_root, free_port, scratch_database, services
from iron.processes import Children, wait_ready

HOST = "127.0.0.1"
ADMIN = ("bench@example.com", secrets.token_urlsafe(16))
CONNECT_CONCURRENCY = 100
WORKER_TIMEOUT_S = 120.0


class _Probe(msgspec.Struct):
    """Just what the clients look at in a message."""

    type: str
    event_id: str | None = None


_probe = msgspec.json.Decoder(_Probe).decode


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- a client process ------------------------------------------------------------------------------


async def _client(
    url: str, token: str, expect: int, gate: asyncio.Semaphore, ready: asyncio.Event, arrivals: list[Any]
) -> int:
    """One socket: until ``expect`` AGENT_EVENTs arrived; returns how many did."""
    got, connecting = 0, True
    await gate.acquire()  # connect in waves, not hundreds of handshakes at once
    try:
        async with feed.connect(url, token, compression=None, max_size=None) as socket:
            first = _probe(await socket.recv(decode=False))
            if first.type != "STATE_UPDATE":
                raise RuntimeError(f"refused: {first.type}")
            gate.release()
            connecting = False
            ready.set()
            while got < expect:
                raw = await socket.recv(decode=False)
                now = time.monotonic()
                message = _probe(raw)
                if message.type == "AGENT_EVENT":
                    arrivals.append((message.event_id, now))
                    got += 1
    finally:
        if connecting:
            gate.release()
    return got


async def _worker(urls: list[str], token: str, clients: int, expect: int, out: Path) -> None:
    arrivals: list[tuple[str, float]] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [
        asyncio.ensure_future(_client(urls[i % len(urls)], token, expect, gate, readies[i], arrivals))
        for i in range(clients)
    ]
    for ready in readies:
        await ready.wait()
    print("ready", flush=True)
    done, _ = await asyncio.wait(tasks, timeout=WORKER_TIMEOUT_S)
    complete = sum(1 for task in done if not task.exception() and task.result() == expect)
    for task in tasks:
        task.cancel()
    await asyncio.to_thread(out.write_text, json.dumps({"arrivals": arrivals, "complete_clients": complete}))


# -- the run ---------------------------------------------------------------------------------------


async def _admin_and_agent(http: httpx.AsyncClient) -> tuple[str, str, str]:
    """An admin token, and an agent with a lease: (token, IC token, lease id)."""
    login = await http.post("/api/v1/auth/login", json={"email": ADMIN[0], "password": ADMIN[1]})
    token = login.raise_for_status().json()["user_token"]
    agent = await http.post(
        "/api/v1/agents",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": "fanout", "budget": 1000},
    )
    ic_token = agent.raise_for_status().json()["ic_token"]["token"]
    lease = await http.post(
        "/api/v1/budget/handshake",
        headers={"Authorization": f"Bearer {ic_token}"},
        json={"requested_budget": 100},
    )
    return token, ic_token, lease.raise_for_status().json()["lease_id"]


def _start_workers(urls: list[str], token: str, args: argparse.Namespace, tmp: Path) -> list[Any]:
    workers = []
    for n in range(args.workers):
        clients = args.clients // args.workers + (1 if n < args.clients % args.workers else 0)
        argv = [sys.executable, "-m", "bench.ws_fanout", "--worker", str(tmp / f"worker-{n}.json")]
        argv += ["--clients", str(clients), "--reports", str(args.reports), "--urls", *urls]
        workers.append(
            subprocess.Popen(  # noqa: S603 - this interpreter, this module
                argv,
                env={**os.environ, "IRON_BENCH_TOKEN": token},
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
        )
    return workers


async def _wait_ready(workers: list[Any]) -> None:
    for worker in workers:
        line = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), WORKER_TIMEOUT_S)
        if line.strip() != b"ready":
            raise RuntimeError("a client process did not get its sockets ready")


async def _report_all(
    urls: list[str], ic_token: str, lease_id: str, args: argparse.Namespace
) -> tuple[dict[str, float], list[float]]:
    """When each report was sent, by event id; and each report's own response time, in ms."""
    sent: dict[str, float] = {}
    answered: list[float] = []
    headers = {"Authorization": f"Bearer {ic_token}"}
    clients = [httpx.AsyncClient(base_url=url, headers=headers, timeout=30) for url in urls]
    try:
        for i in range(args.reports):
            event_id = f"fanout-{i}-{secrets.token_hex(3)}"
            usage = {
                "lease_id": lease_id,
                "request_id": event_id,
                "input_tokens": 100,
                "output_tokens": 20,
                "cost_usd": 0.0001,
                "model": "gpt-4o-mini",
                "provider": "openai",
                "timestamp": "2030-01-01T00:00:00Z",
            }
            sent[event_id] = time.monotonic()
            response = await clients[i % len(clients)].post("/api/v1/budget/report", json=usage)
            response.raise_for_status()
            answered.append((time.monotonic() - sent[event_id]) * 1000)
            await asyncio.sleep(args.interval)
    finally:
        for client in clients:
            await client.aclose()
    return sent, answered


def _results(
    sent: dict[str, float], answered: list[float], outputs: list[dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    delays: list[float] = []
    last: dict[str, float] = {}
    for output in outputs:
        for event_id, arrived in output["arrivals"]:
            delay_ms = (arrived - sent[event_id]) * 1000
            delays.append(delay_ms)
            last[event_id] = max(last.get(event_id, 0.0), delay_ms)
    expected = args.clients * args.reports
    slowest = list(last.values()) or [0.0]
    return {
        "clients": args.clients,
        "replicas": args.replicas,
        "client_processes": args.workers,
        "reports": args.reports,
        "interval_s": args.interval,
        "deliveries_expected": expected,
        "deliveries": len(delays),
        "complete_clients": sum(o["complete_clients"] for o in outputs),
        "p50_ms": round(_percentile(delays, 0.50), 2) if delays else None,
        "p90_ms": round(_percentile(delays, 0.90), 2) if delays else None,
        "p99_ms": round(_percentile(delays, 0.99), 2) if delays else None,
        "max_ms": round(max(delays), 2) if delays else None,
        "all_clients_p50_ms": round(_percentile(slowest, 0.50), 2),
        "all_clients_p99_ms": round(_percentile(slowest, 0.99), 2),
        "report_response_p50_ms": round(_percentile(answered, 0.50), 2),
        "report_response_p99_ms": round(_percentile(answered, 0.99), 2),
        "target_p99_ms": 100,
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="iron-fanout-"))
    with services(default_data_root() / "bench") as urls:
        async with scratch_database(urls.database_url, "iron_fanout") as database_url:
            with Children(tmp) as children:
                env = {
                    "DATABASE_URL": database_url,
                    "REDIS_URL": urls.redis_url,
                    "IRON_BOOTSTRAP_ADMIN_EMAIL": ADMIN[0],
                    "IRON_BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1],
                    "IRON_RATE_LIMITS": "off",
                }
                replicas = []
                for n in range(args.replicas):
                    port = free_port()
                    children.start(f"control-plane-{n}", ["control_plane", "--port", str(port)], env)
                    replicas.append(f"http://{HOST}:{port}")
                async with httpx.AsyncClient(base_url=replicas[0], timeout=30) as http:
                    for n, url in enumerate(replicas):
                        await wait_ready(http, children, f"control-plane-{n}", f"{url}/api/health")
                    token, ic_token, lease_id = await _admin_and_agent(http)
                workers = _start_workers(replicas, token, args, tmp)
                try:
                    await _wait_ready(workers)
                    sent, answered = await _report_all(replicas, ic_token, lease_id, args)
                    for worker in workers:
                        await asyncio.to_thread(worker.wait, WORKER_TIMEOUT_S)
                finally:
                    for worker in workers:
                        if worker.poll() is None:
                            worker.kill()
                outputs = [json.loads((tmp / f"worker-{n}.json").read_text()) for n in range(args.workers)]
    return _results(sent, answered, outputs, args)


def _markdown(r: dict[str, Any]) -> str:
    command = (
        f"python -m bench.ws_fanout --clients {r['clients']} --replicas {r['replicas']} "
        f"--reports {r['reports']} --interval {r['interval_s']:g}"
    )
    row = [
        f"{r['deliveries']:,} of {r['deliveries_expected']:,}",
        *(f"{r[key]} ms" for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
        *(f"{r[key]} ms" for key in ("all_clients_p50_ms", "all_clients_p99_ms")),
        f"{r['report_response_p50_ms']} / {r['report_response_p99_ms']} ms",
        f"<= {r['target_p99_ms']} ms",
    ]
    return (
        "\n".join(
            [
                "# /ws fan-out: usage report to message at every client",
                "",
                f"`{command}`: {r['clients']} sockets in {r['client_processes']} client processes, "
                f"spread over {r['replicas']} control-plane replicas (Redis pub/sub between them), "
                "all on this machine with PostgreSQL and Redis. Each report is one budget-protocol "
                "`POST /api/v1/budget/report`, alternating replicas; a delay runs from just before "
                "the request is sent to the AGENT_EVENT's arrival at one client. The report's own "
                "response time is shown for comparison.",
                "",
                "| deliveries | p50 | p90 | p99 | max | last client of a report: p50 | p99 "
                "| report response p50 / p99 | target p99 |",
                "|---|---|---|---|---|---|---|---|---|",
                "| " + " | ".join(row) + " |",
                "",
                f"Python {platform.python_version()}, {os.cpu_count()} CPUs.",
            ]
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_fanout", description=__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--reports", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between reports (default 0.1)")
    parser.add_argument("--urls", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # internal: run as a client process
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if args.worker:
        uvloop.run(
            _worker(args.urls, os.environ["IRON_BENCH_TOKEN"], args.clients, args.reports, args.worker)
        )
        return 0
    results = uvloop.run(bench(args))
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = _markdown(results)
    (args.out / "ws_fanout.md").write_text(markdown)
    (args.out / "ws_fanout.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown)
    return 0 if results["deliveries"] == results["deliveries_expected"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
