"""A lean load generator for reserve+commit pairs, and the CPU accounting of a measurement.

Locust and httpx cost more CPU per request than the sidecar does, and on a
2-core machine the generator shares the cores with what it measures; so a
connection here is a bare asyncio protocol on keep-alive HTTP/1.1 whose
replies httptools frames, and nothing is parsed that a pair does not need.
One request is in flight per connection. Anything with ``pair(n)`` can be
driven (the Redis ceiling drives the Lua scripts straight from this process).
"""

import asyncio
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, cast

import httptools
import redis

_REQUEST: Final = (
    b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
)


@dataclass(frozen=True)
class PairShape:
    """The two requests of one LLM call; ``%d`` in a body is the pair's number."""

    reserve_path: bytes
    reserve_body: bytes
    commit_path: bytes
    commit_body: bytes


def sidecar_pair(run: str, cost_usd: float = 0.001) -> PairShape:
    """The real sidecar's reserve and commit, with ids unique to ``run`` (commits are deduplicated)."""
    tag = run.encode()
    return PairShape(
        b"/v1/reserve",
        b'{"estimated_cost_usd": %b, "request_id": "%b-%%d"}' % (repr(cost_usd).encode(), tag),
        b"/v1/commit",
        b'{"reservation_id": "%b-%%d", "cost_usd": %b, "input_tokens": 1234, "output_tokens": 567, '
        b'"model": "gpt-4o-mini", "provider": "openai", "status": "completed", "latency_ms": 812}'
        % (tag, repr(cost_usd).encode()),
    )


class ProtocolFailure(RuntimeError):
    """A reply the contract does not allow (wrong status, malformed HTTP)."""


class PairRunner(Protocol):
    async def pair(self, n: int) -> int:
        """Run pair number ``n``; its latency in ns."""
        ...


class Connection(asyncio.Protocol):
    """One persistent HTTP/1.1 connection; httptools says where each reply ends."""

    def __init__(self, shape: PairShape) -> None:
        self._shape = shape
        self._parser = httptools.HttpResponseParser(self)
        self._reply: asyncio.Future[int] | None = None
        self._transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, host: str, port: int, shape: PairShape) -> "Connection":
        transport, conn = await asyncio.get_running_loop().create_connection(lambda: cls(shape), host, port)
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    @classmethod
    async def open_unix(cls, path: str, shape: PairShape) -> "Connection":
        _, conn = await asyncio.get_running_loop().create_unix_connection(lambda: cls(shape), path)
        return conn

    # -- asyncio and httptools callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is duck-typed

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolFailure(f"malformed reply: {exc}"))

    def on_message_complete(self) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.set_result(self._parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("the server closed the connection"))

    def _fail(self, exc: Exception) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(exc)

    # -- requests -----------------------------------------------------------------------------------

    async def _request(self, path: bytes, body: bytes, expect: int) -> None:
        assert self._transport is not None
        self._reply = asyncio.get_running_loop().create_future()
        self._transport.write(_REQUEST % (path, len(body), body))
        status = await self._reply
        if status != expect:
            raise ProtocolFailure(f"{path.decode()}: HTTP {status}, expected {expect}")

    async def pair(self, n: int) -> int:
        """One reserve then one commit; the pair's latency in ns."""
        shape = self._shape
        start = time.perf_counter_ns()
        await self._request(shape.reserve_path, shape.reserve_body % n, 200)
        await self._request(shape.commit_path, shape.commit_body % n, 204)
        return time.perf_counter_ns() - start

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass
class Load:
    """What one load shape measured: pair latencies (ns) and the CPU each process spent."""

    latencies: list[int] = field(default_factory=list)
    #: How late each open-loop pair started against its schedule (ns): the generator's own lag.
    start_lags: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    attempts: int = 1

    @property
    def other_cores(self) -> float:
        """Cores that processes other than ours kept busy meanwhile: this measurement's noise."""
        return self.cpu_s.get("other", 0.0) / self.elapsed_s if self.elapsed_s else 0.0


async def closed_loop(runners: Sequence[PairRunner], duration: float) -> Load:
    """Each runner sends pairs back to back until the deadline: maximum throughput."""
    load = Load()
    deadline = time.perf_counter_ns() + int(duration * 1e9)

    async def run(k: int) -> None:
        n = k
        while time.perf_counter_ns() < deadline:
            load.latencies.append(await runners[k].pair(n))
            n += len(runners)

    start = time.perf_counter()
    await asyncio.gather(*(run(k) for k in range(len(runners))))
    load.elapsed_s = time.perf_counter() - start
    return load


async def open_loop(runners: Sequence[PairRunner], rate: float, duration: float) -> Load:
    """Pairs start on a fixed clock (pair i at t0 + i/rate), spread round-robin over the
    runners, so a slow reply cannot slow the offered load down (no coordinated omission
    from the generator; lateness is recorded as start lag)."""
    load = Load()
    total = int(rate * duration)
    interval_ns = 1e9 / rate
    t0 = time.perf_counter_ns() + 10_000_000

    async def run(k: int) -> None:
        for i in range(k, total, len(runners)):
            due = t0 + int(i * interval_ns)
            wait = due - time.perf_counter_ns()
            if wait > 0:
                await asyncio.sleep(wait / 1e9)
            load.start_lags.append(max(0, time.perf_counter_ns() - due))
            load.latencies.append(await runners[k].pair(i))

    start = time.perf_counter()
    await asyncio.gather(*(run(k) for k in range(len(runners))))
    load.elapsed_s = time.perf_counter() - start
    return load


# -- CPU accounting: which process the cores went to ---------------------------------------------

_TICK: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu_s(pid: int) -> float:
    """User+system CPU seconds of ``pid`` and its descendants (granian runs a worker child)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / _TICK
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += tree_cpu_s(int(child))
        return total
    except (OSError, ValueError, IndexError):
        return 0.0


def machine_busy_s() -> float:
    """CPU seconds all cores spent running processes or stolen by the hypervisor (/proc/stat),
    to see other people's load. Interrupt time is left out: loopback traffic is ours."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, steal = ticks[0], ticks[1], ticks[2], ticks[7]  # guest time is in user
    return (user + nice + system + steal) / _TICK


def redis_cpu_s(client: redis.Redis) -> float:
    """The Redis server's own CPU seconds (all its clients, not only ours)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


#: A CPU counter in seconds: a process tree, Redis's INFO, this process.
CpuCounter = Callable[[], float]


@dataclass
class CpuMeter:
    """CPU seconds of each named part during a measurement; the generator (this process) is
    ``loadgen`` and whatever else kept the machine busy is ``other``."""

    parts: dict[str, CpuCounter]

    def sample(self) -> dict[str, float]:
        return {
            **{name: count() for name, count in self.parts.items()},
            "loadgen": time.process_time(),
            "machine": machine_busy_s(),
        }

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        spent = {name: after[name] - before[name] for name in before}
        machine = spent.pop("machine")
        spent["other"] = max(0.0, machine - sum(spent.values()))
        return spent


def percentile_ms(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile in ms."""
    if not sorted_ns:
        return float("nan")
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6


def summary(load: Load) -> dict[str, Any]:
    lat = sorted(load.latencies)
    pairs = len(lat)
    lags = sorted(load.start_lags)
    return {
        "pairs": pairs,
        "pairs_per_s": round(pairs / load.elapsed_s, 1) if load.elapsed_s else 0.0,
        **{
            f"p{k}_ms": round(percentile_ms(lat, q), 3)
            for k, q in (("50", 0.5), ("90", 0.9), ("99", 0.99), ("99.9", 0.999))
        },
        "max_ms": round(lat[-1] / 1e6, 3) if lat else None,
        "start_lag_p99_ms": round(percentile_ms(lags, 0.99), 3) if lags else None,
        "attempts": load.attempts,
        "cpu_us_per_pair": {k: round(v / pairs * 1e6, 1) for k, v in load.cpu_s.items()} if pairs else {},
        "cpu_cores_busy": {k: round(v / load.elapsed_s, 2) for k, v in load.cpu_s.items()},
    }
