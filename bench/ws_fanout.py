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
import contextlib
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import httpx
import msgspec
import uvloop
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from iron import feed
from iron.embedded import default_data_root, scratch_database, services
from iron.processes import Children, start_control_planes
from iron.realtime import Auth, encode

HOST = "127.0.0.1"
ADMIN = ("bench@example.com", secrets.token_urlsafe(16))
CONNECT_CONCURRENCY = 100
CONNECT_TRIES = 3
WORKER_TIMEOUT_S = 120.0
SETTLE_S = 10.0  # after the last report: what has not arrived by then counts as lost


class _Probe(msgspec.Struct):
    """Just what the clients look at in a message."""

    type: str
    event_id: str | None = None


_probe = msgspec.json.Decoder(_Probe).decode


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- a client process ------------------------------------------------------------------------------


class _Client(asyncio.Protocol):
    """One socket, read in the transport's callback: the clients' own cost must not hide the server's.

    The WebSocket protocol is the ``websockets`` library's (sans I/O); an arrival is timed as soon
    as its bytes are handed over, before anything is decoded.
    """

    def __init__(self, url: str, token: str, expect: int, arrivals: list[tuple[str | None, float]]) -> None:
        self.url, self.uri = url, parse_uri(feed.feed_url(url))
        self.opened = False  # got its STATE_UPDATE
        self.protocol = ClientProtocol(self.uri)
        self.token, self.expect, self.arrivals, self.got = token, expect, arrivals, 0
        self.ready = asyncio.Event()
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        if pending := self.protocol.data_to_send():
            self.transport.write(b"".join(pending))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):  # the handshake is done: authenticate
                self.protocol.send_text(encode(Auth(type="auth", token=self.token)))
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self._message(_probe(event.data), now)
        self._flush()  # pongs and the auth message

    def _message(self, message: _Probe, now: float) -> None:
        if message.type == "STATE_UPDATE":
            self.opened = True
            self.ready.set()
        elif message.type == "AGENT_EVENT":
            self.arrivals.append((message.event_id, now))
            self.got += 1
            if self.got == self.expect and not self.done.done():
                self.done.set_result(self.got)

    def connection_lost(self, exc: Exception | None) -> None:
        self.ready.set()  # never leave the start-up waiting on a socket that is gone
        if not self.done.done():
            self.done.set_result(self.got)


async def _worker(urls: list[str], token: str, clients: int, expect: int, out: Path) -> None:
    """Until every socket has all its messages, or the parent closes our stdin (it is done sending)."""
    loop = asyncio.get_running_loop()
    arrivals: list[tuple[str | None, float]] = []
    sockets: list[_Client] = []
    for wave in range(0, clients, CONNECT_CONCURRENCY):  # in waves, not all handshakes at once
        urls_of_wave = [urls[i % len(urls)] for i in range(wave, min(wave + CONNECT_CONCURRENCY, clients))]
        for _ in range(CONNECT_TRIES):  # a socket refused on a busy machine is opened again
            batch = [_Client(url, token, expect, arrivals) for url in urls_of_wave]
            for client in batch:
                await loop.create_connection(lambda c=client: c, client.uri.host, client.uri.port)  # type: ignore[misc]
            for client in batch:
                await client.ready.wait()
            sockets += [client for client in batch if client.opened]
            urls_of_wave = [client.url for client in batch if not client.opened]
            if not urls_of_wave:
                break
        if urls_of_wave:
            raise RuntimeError(f"{len(urls_of_wave)} sockets could not be opened")
    print("ready", flush=True)
    stop = asyncio.ensure_future(asyncio.to_thread(sys.stdin.buffer.read))
    everything = asyncio.ensure_future(asyncio.wait([client.done for client in sockets]))
    await asyncio.wait([stop, everything], timeout=WORKER_TIMEOUT_S, return_when="FIRST_COMPLETED")
    complete = sum(1 for client in sockets if client.got == expect)
    await asyncio.to_thread(out.write_text, json.dumps({"arrivals": arrivals, "complete_clients": complete}))
    for client in sockets:
        if client.transport is not None:
            client.transport.close()
    everything.cancel()


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
                stdin=subprocess.PIPE,  # closed when every report was sent and had time to arrive
            )
        )
    return workers


async def _wait_ready(workers: list[Any]) -> None:
    for worker in workers:
        line = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), WORKER_TIMEOUT_S)
        if line.strip() != b"ready":
            raise RuntimeError("a client process did not get its sockets ready")


async def _settled(workers: list[Any]) -> None:
    """Give the last messages time to arrive, then tell the client processes to stop."""
    deadline = time.monotonic() + SETTLE_S
    for worker in workers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(worker.wait, max(deadline - time.monotonic(), 0.01))
    for worker in workers:
        if worker.poll() is None:
            worker.stdin.close()
        await asyncio.to_thread(worker.wait, WORKER_TIMEOUT_S)


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
        "credential_recheck_s": float(os.environ.get("IRON_WS_RECHECK_S", 15)),
        "load_average_1m": [round(args.load_before, 2), round(os.getloadavg()[0], 2)],
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="iron-fanout-"))
    with services(default_data_root() / "bench") as urls:
        async with scratch_database(urls.database_url, "iron_fanout") as database_url:
            with Children(tmp) as children:
                settings = {
                    "IRON_RATE_LIMITS": "off",
                    "IRON_DB_POOL_MIN": "10",  # opened at start, not while the sockets connect
                }
                replicas = await start_control_planes(
                    children, database_url, urls.redis_url, ADMIN, args.replicas, settings
                )
                async with httpx.AsyncClient(base_url=replicas[0], timeout=30) as http:
                    token, ic_token, lease_id = await _admin_and_agent(http)
                workers = _start_workers(replicas, token, args, tmp)
                try:
                    await _wait_ready(workers)
                    sent, answered = await _report_all(replicas, ic_token, lease_id, args)
                    await _settled(workers)
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
                "response time is shown for comparison. Each socket's credential is checked again "
                f"every {r['credential_recheck_s']:g} s, as in production.",
                "",
                "| deliveries | p50 | p90 | p99 | max | last client of a report: p50 | p99 "
                "| report response p50 / p99 | target p99 |",
                "|---|---|---|---|---|---|---|---|---|",
                "| " + " | ".join(row) + " |",
                "",
                f"Python {platform.python_version()}, {os.cpu_count()} CPUs; 1-minute load average "
                f"{r['load_average_1m'][0]} before the run, {r['load_average_1m'][1]} after (other work on "
                "the machine competes for the same CPUs).",
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
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between reports (default 0.2)")
    parser.add_argument("--urls", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # internal: run as a client process
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if args.worker:
        uvloop.run(
            _worker(args.urls, os.environ["IRON_BENCH_TOKEN"], args.clients, args.reports, args.worker)
        )
        return 0
    args.load_before = os.getloadavg()[0]  # the machine is shared: say how busy it was
    results = uvloop.run(bench(args))
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = _markdown(results)
    (args.out / "ws_fanout.md").write_text(markdown)
    (args.out / "ws_fanout.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown)
    return 0 if results["deliveries"] == results["deliveries_expected"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
