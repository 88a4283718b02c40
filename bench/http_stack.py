"""Which HTTP server stack should carry the sidecar's hot path? Measured, not guessed.

Per LLM call a runtime sends ``POST /v1/reserve`` then ``POST /v1/commit`` to the sidecar on
localhost; each handler decodes JSON with msgspec, makes one Redis ``EVALSHA`` and encodes a small
reply. The targets are a reserve+commit pair p50 <= 0.5 ms and p99 <= 2 ms at 1,000 pairs/s, and
>= 5,000 pairs/s sustained, with the load generator on the same 2-core machine.

This script serves the same two endpoints on each candidate stack, one worker process each:

* ``litestar-uvicorn``: a Litestar app on uvicorn (uvloop + httptools, no access log);
* ``asgi-uvicorn``: a plain ASGI callable (dict dispatch, no framework) on the same uvicorn;
* ``asgi-granian``: the same plain ASGI callable on granian (``--interface asgi``, uvloop; granian
  is not a dependency: where it is not installed, its two stacks get one "not installed" row each);
* ``rsgi-granian``: the same handlers on granian's native RSGI interface (uvloop);
* ``sidecar-http``: the same handlers on the sidecar's own server (:mod:`sidecar.http`, httptools on
  uvloop, no ASGI), which replaced uvicorn on the hot path after ``python -m bench.hot_path``
  measured its no-op at under half uvicorn's CPU per pair.

Each app serves three variants of the endpoints: ``redis-py`` (redis.asyncio with hiredis, as
first planned), ``scripts`` (``sidecar.scripts``, the sidecar's pipelined client) and ``noop`` (no
Redis call: the transport ceiling). A ``floor-canned`` row (canned replies from a bare Protocol)
shows what the load generator and loopback cost by themselves. The load generator
(``bench.loadgen``: bare asyncio protocols on uvloop, keep-alive HTTP/1.1, one request in flight
per connection) runs an open loop at a fixed rate and a closed loop at full speed against each,
and the results go to ``bench/results/http_stack.{md,json}``.

Run: ``python -m bench.http_stack`` (under 3 minutes; ``--help`` for knobs). Traffic goes only to
127.0.0.1; Redis is ``REDIS_URL`` (default ``redis://127.0.0.1:6379/14``), one scratch key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import msgspec
import redis
import redis.asyncio
import uvloop
from litestar import Litestar, Router, post

from bench.loadgen import (
    Connection,
    CpuMeter,
    Load,
    PairShape,
    ProtocolFailure,
    closed_loop,
    open_loop,
    redis_cpu_s,
    summary,
    tree_cpu_s,
)
from iron.embedded import free_port
from sidecar.http import HttpServer, Reply, Request
from sidecar.scripts import LuaScript, ScriptClient

if TYPE_CHECKING:
    from granian.rsgi import HTTPProtocol, Scope  # type: ignore[attr-defined, import-not-found, unused-ignore]

HOST: Final = "127.0.0.1"
REDIS_URL: Final = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14")
#: The one scratch key every handler touches (hash-tagged, as the real lease keys are).
LEASE_KEY: Final = "bench:http_stack:{lease}"
#: Stand-in for reserve.lua / commit.lua: one atomic server-side step, one round trip.
LUA: Final = "return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])"
BUDGET_MICROS: Final = 10**12
#: The variants of each endpoint, by URL prefix: how (or whether) a handler calls Redis.
VARIANT_PREFIX: Final = {"redis-py": "", "scripts": "/scripts", "noop": "/noop"}
READY_TIMEOUT_S: Final = 20.0
#: Other processes' CPU above which a measurement is retried, and its row flagged, as noisy.
NOISY_CORES: Final = 0.2
MAX_ATTEMPTS: Final = 3
#: Allowance per server for start-up and shutdown when budgeting retries.
SERVER_START_S: Final = 3.0
ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------------------------
# The endpoints: one ledger (Redis or no-op), shared by every stack.
# --------------------------------------------------------------------------------------------


class ReserveRequest(msgspec.Struct, frozen=True):
    estimated_cost_usd: float
    request_id: str


class ReserveReply(msgspec.Struct, frozen=True):
    reservation_id: str
    remaining_usd: float


class CommitRequest(msgspec.Struct, frozen=True):
    reservation_id: str
    actual_cost_usd: float
    input_tokens: int
    output_tokens: int
    model: str
    provider: str
    status: str
    latency_ms: int | None = None


Incr = Callable[[str, int], Awaitable[Any]]


class Ledger:
    """The handlers' business step: one ``EVALSHA`` through ``incr``, or nothing without one."""

    def __init__(self, incr: Incr | None) -> None:
        self._incr = incr

    async def _add(self, field: str, micros: int) -> int:
        return micros if self._incr is None else int(await self._incr(field, micros))

    async def reserve(self, req: ReserveRequest) -> ReserveReply:
        reserved = await self._add("reserved", round(req.estimated_cost_usd * 1_000_000))
        return ReserveReply(req.request_id, (BUDGET_MICROS - reserved) / 1_000_000)

    async def commit(self, req: CommitRequest) -> None:
        await self._add("spent", round(req.actual_cost_usd * 1_000_000))


def _ledgers() -> tuple[dict[str, Ledger], Callable[[], Awaitable[None]]]:
    """Each variant's ledger by URL prefix, and how to close their clients; one client of each
    kind per server process, shared by all requests.

    * ``redis-py``: redis.asyncio with hiredis, ``register_script`` (EVALSHA, reloads on NOSCRIPT;
      the test suite runs SCRIPT FLUSH on the same Redis), as in ``sidecar/store.py``;
    * ``scripts``: :class:`sidecar.scripts.ScriptClient`, the sidecar's auto-pipelined client;
    * ``noop``: no Redis call, the transport ceiling.
    """
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    script = client.register_script(LUA)
    lean, lua = ScriptClient.from_url(REDIS_URL), LuaScript.of(LUA)

    async def via_redis_py(field: str, micros: int) -> Any:
        return await script(keys=[LEASE_KEY], args=[field, micros])

    async def via_scripts(field: str, micros: int) -> Any:
        return await lean.run(lua, (LEASE_KEY,), (field, micros))

    async def close() -> None:
        await client.aclose()
        await lean.aclose()

    incrs: dict[str, Incr | None] = {"redis-py": via_redis_py, "scripts": via_scripts, "noop": None}
    return {VARIANT_PREFIX[name]: Ledger(incr) for name, incr in incrs.items()}, close


# ---- (a) Litestar: idiomatic handlers, the framework decodes/encodes with msgspec. ----------


def _litestar_router(prefix: str, ledger: Ledger) -> Router:
    @post("/v1/reserve", status_code=200)
    async def reserve(data: ReserveRequest) -> ReserveReply:
        return await ledger.reserve(data)

    @post("/v1/commit", status_code=204)
    async def commit(data: CommitRequest) -> None:
        await ledger.commit(data)

    return Router(path=prefix or "/", route_handlers=[reserve, commit])


def litestar_app() -> Litestar:
    """Factory for ``uvicorn --factory``: the endpoints as a Litestar app."""
    ledgers, close = _ledgers()
    return Litestar(
        route_handlers=[_litestar_router(prefix, ledger) for prefix, ledger in ledgers.items()],
        on_shutdown=[close],
        openapi_config=None,
    )


# ---- (b, c, d) No framework: a dict from (method, path) to a bytes -> (status, bytes) route. --

Route = Callable[[bytes], Awaitable[tuple[int, bytes]]]

_ENCODE = msgspec.json.Encoder().encode
_DECODE_RESERVE = msgspec.json.Decoder(ReserveRequest).decode
_DECODE_COMMIT = msgspec.json.Decoder(CommitRequest).decode
_NOT_FOUND: Final = (404, b'{"detail":"not found"}')


def _routes(ledgers: dict[str, Ledger]) -> dict[tuple[str, str], Route]:
    def pair(ledger: Ledger) -> tuple[Route, Route]:
        async def reserve(body: bytes) -> tuple[int, bytes]:
            return 200, _ENCODE(await ledger.reserve(_DECODE_RESERVE(body)))

        async def commit(body: bytes) -> tuple[int, bytes]:
            await ledger.commit(_DECODE_COMMIT(body))
            return 204, b""

        return reserve, commit

    routes: dict[tuple[str, str], Route] = {}
    for prefix, ledger in ledgers.items():
        reserve, commit = pair(ledger)
        routes["POST", f"{prefix}/v1/reserve"] = reserve
        routes["POST", f"{prefix}/v1/commit"] = commit
    return routes


async def _dispatch(
    routes: dict[tuple[str, str], Route], method: str, path: str, body: bytes
) -> tuple[int, bytes]:
    route = routes.get((method, path))
    if route is None:
        return _NOT_FOUND
    try:
        return await route(body)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError too
        return 400, _ENCODE({"detail": str(exc)})


_JSON_HEADER: Final = (b"content-type", b"application/json")


def asgi_app() -> Callable[[dict[str, Any], Any, Any], Awaitable[None]]:
    """Factory for uvicorn/granian ``--factory``: a bare ASGI 3 callable with lifespan."""
    ledgers, close = _ledgers()
    routes = _routes(ledgers)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, payload = await _dispatch(routes, scope["method"], scope["path"], body)
        headers = [_JSON_HEADER, (b"content-length", b"%d" % len(payload))] if payload else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


class RsgiApp:
    """Granian's native interface: no ASGI message dicts, the body is one awaited bytes."""

    def __init__(self) -> None:
        self._routes = _routes(_ledgers()[0])

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        status, payload = await _dispatch(self._routes, scope.method, scope.path, await proto())
        if payload:
            proto.response_bytes(status, [("content-type", "application/json")], payload)
        else:
            proto.response_empty(status, [])


def rsgi_app() -> RsgiApp:
    """Factory for ``granian --interface rsgi --factory``."""
    return RsgiApp()


# --------------------------------------------------------------------------------------------
# The stacks: each one exact command line, one worker process, bound to 127.0.0.1.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    name: str
    argv: Callable[[int], list[str]]
    variants: tuple[str, ...] = tuple(VARIANT_PREFIX)
    #: The server it runs on, where that is not a dependency of this project (granian): a stack
    #: whose server is not installed is reported as such instead of failing the run.
    optional_package: str | None = None

    def installed(self) -> bool:
        return self.optional_package is None or importlib.util.find_spec(self.optional_package) is not None


def _uvicorn(factory: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [
            *(sys.executable, "-m", "uvicorn", f"bench.http_stack:{factory}", "--factory"),
            *("--host", HOST, "--port", str(port), "--workers", "1"),
            *("--loop", "uvloop", "--http", "httptools", "--lifespan", "on"),
            *("--no-access-log", "--log-level", "warning"),
        ]

    return argv


def _granian(interface: str, factory: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [
            *(sys.executable, "-m", "granian", "--interface", interface, "--factory"),
            *("--host", HOST, "--port", str(port), "--workers", "1"),
            *("--loop", "uvloop", "--http", "1", "--no-ws"),
            *("--no-access-log", "--log-level", "warning"),
            f"bench.http_stack:{factory}",
        ]

    return argv


STACKS: Final = (
    Stack("litestar-uvicorn", _uvicorn("litestar_app")),
    Stack("asgi-uvicorn", _uvicorn("asgi_app")),
    Stack("asgi-granian", _granian("asgi", "asgi_app"), optional_package="granian"),
    Stack("rsgi-granian", _granian("rsgi", "rsgi_app"), optional_package="granian"),
    Stack(
        "sidecar-http",
        lambda port: [sys.executable, "-m", "bench.http_stack", "--serve-sidecar-http", str(port)],
    ),
    # Not a candidate: canned replies from a bare uvloop Protocol, so the generator's own cost and
    # the loopback hops show as a floor under every other row.
    Stack(
        "floor-canned",
        lambda port: [sys.executable, "-m", "bench.http_stack", "--serve-floor", str(port)],
        ("noop",),
    ),
)


_CANNED_RESERVE: Final = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 54\r\n\r\n"
    b'{"reservation_id":"r-1","remaining_usd":999999.990000}'
)
_CANNED_COMMIT: Final = b"HTTP/1.1 204 No Content\r\n\r\n"


class _CannedHttp(asyncio.Protocol):
    """Calibration server: frames each request (head + Content-Length body), replies canned."""

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            head = buffer[:end].lower()
            at = head.find(b"\r\ncontent-length:")
            length = int(head[at + 17 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(buffer) < end + 4 + length:
                break
            assert self._transport is not None
            self._transport.write(_CANNED_RESERVE if b"/reserve " in head[:64] else _CANNED_COMMIT)
            buffer = buffer[end + 4 + length :]
        self._buffer = buffer


async def _serve_floor(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_CannedHttp, HOST, port)
    async with server:
        await server.serve_forever()


async def _serve_sidecar_http(port: int) -> None:
    """The endpoints on :class:`sidecar.http.HttpServer`, until SIGINT or SIGTERM."""
    ledgers, close = _ledgers()
    routes = _routes(ledgers)

    async def handler(request: Request) -> Reply:
        status, payload = await _dispatch(routes, request.method, request.path, request.body)
        return status, payload, b"content-type: application/json\r\n" if payload else b""

    try:
        await HttpServer(handler, lambda status, code, message: (status, b"", b"")).serve(HOST, port)
    finally:
        await close()


@contextlib.contextmanager
def _server(stack: Stack) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run the stack's server as a subprocess in its own session; yield (process, port)."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            stack.argv(port), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc, port
        except BaseException:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# The bodies of this benchmark's own two endpoints (see ReserveRequest and CommitRequest above).
_RESERVE_BODY: Final = b'{"estimated_cost_usd": 0.01, "request_id": "r-%d"}'
_COMMIT_BODY: Final = (
    b'{"reservation_id": "r-%d", "actual_cost_usd": 0.0093, "input_tokens": 1234, '
    b'"output_tokens": 567, "model": "gpt-4o-mini-2024-07-18", "provider": "openai", '
    b'"status": "ok", "latency_ms": 812}'
)


def _shape(prefix: str) -> PairShape:
    return PairShape(
        f"{prefix}/v1/reserve".encode(), _RESERVE_BODY, f"{prefix}/v1/commit".encode(), _COMMIT_BODY
    )


async def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the server answers a no-op pair: bound, app loaded, lifespan done."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            conn = await Connection.open(HOST, port, _shape(VARIANT_PREFIX["noop"]))
            try:
                await asyncio.wait_for(conn.pair(0), 2.0)
                return
            finally:
                await conn.close()
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ProtocolFailure):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _measure(
    shape: Callable[[list[Connection]], Awaitable[Load]], port: int, prefix: str, conns: int, pid: int
) -> Load:
    """Open the connections, warm up (pool, caches), then run ``shape`` with GC paused."""
    client = redis.Redis.from_url(REDIS_URL)
    pool = [await Connection.open(HOST, port, _shape(prefix)) for _ in range(conns)]
    try:
        await closed_loop(pool, 0.5)
        gc.collect()
        gc.disable()
        meter = CpuMeter({"server": lambda: tree_cpu_s(pid), "redis": lambda: redis_cpu_s(client)})
        before = meter.sample()
        load = await shape(pool)
        load.cpu_s = meter.spent(before, meter.sample())
        return load
    finally:
        gc.enable()
        client.close()
        for conn in pool:
            await conn.close()


@dataclass
class Budget:
    """Keeps the whole run bounded: noisy measurements are retried only with time to spare."""

    deadline: float  # time.monotonic()
    measurements_left: int
    per_measurement_s: float

    def may_retry(self) -> bool:
        return time.monotonic() + (self.measurements_left + 1) * self.per_measurement_s < self.deadline


async def _measure_quietly(
    shape: Callable[[list[Connection]], Awaitable[Load]],
    port: int,
    prefix: str,
    conns: int,
    pid: int,
    budget: Budget,
) -> Load:
    """Measure; when other processes (a shared machine) were busy, measure again while the budget
    allows, and keep the quietest attempt."""
    best = await _measure(shape, port, prefix, conns, pid)
    for attempt in range(2, MAX_ATTEMPTS + 1):
        if best.other_cores <= NOISY_CORES or not budget.may_retry():
            break
        print(f"  noisy ({best.other_cores:.2f} cores busy elsewhere): measuring again", flush=True)
        load = await _measure(shape, port, prefix, conns, pid)
        load.attempts = attempt
        if load.other_cores < best.other_cores:
            best = load
    budget.measurements_left -= 1
    return best


# --------------------------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    stack: str
    variant: str
    command: str
    open_loop: dict[str, Any]
    closed_loop: dict[str, Any]


def _meets_target(r: Result) -> bool:
    o, c = r.open_loop, r.closed_loop
    return bool(o["p50_ms"] <= 0.5 and o["p99_ms"] <= 2.0 and c["pairs_per_s"] >= 5000)


def _other_load(r: Result) -> float:
    """Cores other processes kept busy (the worse of the two shapes): how noisy this row is."""
    return float(max(r.open_loop["cpu_cores_busy"]["other"], r.closed_loop["cpu_cores_busy"]["other"]))


NOT_INSTALLED: Final = "not installed"


def _markdown(results: list[Result], not_installed: list[str], args: argparse.Namespace) -> str:
    head = (
        f"| stack | variant | open {args.rate:g}/s p50 | p90 | p99 | p99.9 "
        f"| closed {args.closed_conns}c pairs/s | closed p50 | closed p99 "
        "| server µs/pair | redis µs/pair | loadgen µs/pair | other load | target |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        o, c = r.open_loop, r.closed_loop
        cpu = c["cpu_us_per_pair"]
        target = "-" if r.variant == "noop" else ("yes" if _meets_target(r) else "no")
        other = _other_load(r)
        rows.append(
            f"| {r.stack} | {r.variant} | {o['p50_ms']:.3f} | {o['p90_ms']:.3f} | {o['p99_ms']:.3f} "
            f"| {o['p99.9_ms']:.3f} | {c['pairs_per_s']:,.0f} | {c['p50_ms']:.3f} | {c['p99_ms']:.3f} "
            f"| {cpu.get('server', 0):.0f} | {cpu.get('redis', 0):.0f} | {cpu.get('loadgen', 0):.0f} "
            f"| {other:.2f} | {target} |"
        )
    rows += [f"| {name} | {NOT_INSTALLED} |" + " - |" * (head.count("|") - 3) for name in not_installed]
    return "\n".join(rows)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:  # granian is not a dependency: its stacks run only where it is
        return NOT_INSTALLED


def _environment(args: argparse.Namespace) -> dict[str, Any]:
    redis_version = redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "redis_server": redis_version,
        "packages": {
            p: _version(p)
            for p in ("litestar", "uvicorn", "httptools", "uvloop", "granian", "msgspec", "redis", "hiredis")
        },
        "duration_s": args.duration,
        "open_loop": {"rate_pairs_per_s": args.rate, "connections": args.open_conns},
        "closed_loop": {"connections": args.closed_conns},
        "latencies": "ms per reserve+commit pair, from the load generator (bare asyncio protocols, uvloop)",
        "cpu_us_per_pair": "closed loop; server includes child processes; redis from INFO cpu",
        "other_load": "cores busy with processes other than server, redis and loadgen (noise)",
        "loadavg_at_start": args.loadavg_at_start,
    }


# --------------------------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------------------------


def _variants(stack: Stack, args: argparse.Namespace) -> list[str]:
    return [v for v in stack.variants if v in args.variants]


def _command(stack: Stack) -> str:
    """The stack's command line as one would type it (the benchmark picks a free port)."""
    return " ".join(["python", *stack.argv(8000)[1:]])


async def _bench_stack(stack: Stack, args: argparse.Namespace, budget: Budget) -> list[Result]:
    results = []
    with _server(stack) as (proc, port):
        await _wait_ready(port, proc)
        pid = proc.pid
        for variant in _variants(stack, args):
            prefix = VARIANT_PREFIX[variant]
            opened = await _measure_quietly(
                lambda c: open_loop(c, args.rate, args.duration), port, prefix, args.open_conns, pid, budget
            )
            closed = await _measure_quietly(
                lambda c: closed_loop(c, args.duration), port, prefix, args.closed_conns, pid, budget
            )
            result = Result(stack.name, variant, _command(stack), summary(opened), summary(closed))
            o, c = result.open_loop, result.closed_loop
            print(
                f"{stack.name:<17} {variant:<5} open p50 {o['p50_ms']:.3f} ms p99 {o['p99_ms']:.3f} ms"
                f" | closed {c['pairs_per_s']:,.0f} pairs/s",
                flush=True,
            )
            results.append(result)
    return results


async def _main(args: argparse.Namespace, stacks: list[Stack]) -> list[Result]:
    client = redis.Redis.from_url(REDIS_URL)
    client.script_load(LUA)
    client.delete(LEASE_KEY)
    try:
        budget = Budget(
            deadline=time.monotonic() + args.budget - SERVER_START_S * len(stacks),
            measurements_left=sum(2 * len(_variants(s, args)) for s in stacks),
            per_measurement_s=args.duration + 1.0,
        )
        results: list[Result] = []
        for stack in stacks:
            if _variants(stack, args):
                results += await _bench_stack(stack, args, budget)
        return results
    finally:
        client.delete(LEASE_KEY)
        client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load shape (default 5)")
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop pairs/s (default 1000)")
    parser.add_argument("--open-conns", type=int, default=16, help="open-loop connections (default 16)")
    parser.add_argument("--closed-conns", type=int, default=32, help="closed-loop connections (default 32)")
    names = [s.name for s in STACKS]
    parser.add_argument(
        "--stacks", type=lambda s: s.split(","), default=names, help=f"subset of {','.join(names)}"
    )
    parser.add_argument(
        "--variants",
        type=lambda s: s.split(","),
        default=list(VARIANT_PREFIX),
        help=f"subset of {','.join(VARIANT_PREFIX)}",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="results folder (default bench/results)"
    )
    parser.add_argument(
        "--budget", type=float, default=170.0, help="seconds the run may take, retries included (default 170)"
    )
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-sidecar-http", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(_serve_floor(args.serve_floor))
        return
    if args.serve_sidecar_http:
        uvloop.run(_serve_sidecar_http(args.serve_sidecar_http))
        return
    if unknown := (set(args.stacks) - set(names)) | (set(args.variants) - set(VARIANT_PREFIX)):
        parser.error(f"unknown stacks or variants: {', '.join(sorted(unknown))}")

    args.loadavg_at_start = os.getloadavg()
    chosen = [s for s in STACKS if s.name in args.stacks]
    not_installed = [s.name for s in chosen if not s.installed()]
    for name in not_installed:
        print(f"{name}: {NOT_INSTALLED}, skipped", flush=True)
    results = uvloop.run(_main(args, [s for s in chosen if s.name not in not_installed]))
    table = _markdown(results, not_installed, args)
    env = _environment(args)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"environment": env, "results": [asdict(r) for r in results], "not_installed": not_installed}
    (args.out / "http_stack.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "http_stack.md").write_text(
        "# HTTP stack for the sidecar hot path\n\n"
        "Generated by `python -m bench.http_stack`; latencies in ms per reserve+commit pair. "
        f"Target (rows that call Redis): open-loop p50 <= 0.5 and p99 <= 2 at {args.rate:g} pairs/s, "
        ">= 5,000 pairs/s closed loop. Variants: `redis-py` = redis.asyncio + hiredis "
        "`register_script`; `scripts` = `sidecar.scripts.ScriptClient` (pipelined); `noop` = no Redis "
        "call. `floor-canned` is not a candidate: canned replies, the generator's own floor. A stack "
        "whose server is not installed here has one row that says so. "
        "CPU columns: closed loop, µs of CPU per pair. Other load: cores busy with other processes "
        "during the row (noise; 2 cores in all).\n\n"
        f"{table}\n\n"
        "Commands (one worker process each; the run picks a free port):\n\n"
        + "".join(f"- {s.name}: `{_command(s)}`\n" for s in STACKS if s.name in args.stacks)
        + "\n"
        f"Environment: Python {env['python']}, {env['cpus']} CPUs, Redis {env['redis_server']}, "
        + ", ".join(f"{k} {v}" for k, v in env["packages"].items())
        + ".\n"
    )
    print()
    print(table)
    if noisy := [f"{r.stack}/{r.variant}" for r in results if _other_load(r) > NOISY_CORES]:
        print(f"\nwarning: other processes kept > {NOISY_CORES} cores busy during {', '.join(noisy)}: rerun")


if __name__ == "__main__":
    main()
