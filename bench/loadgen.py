"""A lean load generator for reserve+commit pairs: raw asyncio streams, keep-alive HTTP/1.1.

Locust and httpx cost more CPU per request than the sidecar does, and on a
2-core machine the generator shares the cores with what it measures; so this
one parses only what a reply needs. One request is in flight per connection.
"""

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Final

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


class Connection:
    """One persistent HTTP/1.1 connection, parsing only what the replies need."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, shape: PairShape) -> None:
        self._reader, self._writer = reader, writer
        self._shape = shape

    @classmethod
    async def open(cls, host: str, port: int, shape: PairShape) -> "Connection":
        reader, writer = await asyncio.open_connection(host, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, shape)

    async def _request(self, path: bytes, body: bytes, expect: int) -> None:
        self._writer.write(_REQUEST % (path, len(body), body))
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
            if length:
                await self._reader.readexactly(length)
        elif b"\r\ntransfer-encoding: chunked" in lower:
            while size := int((await self._reader.readuntil(b"\r\n")).strip(), 16):
                await self._reader.readexactly(size + 2)
            await self._reader.readuntil(b"\r\n")
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
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


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


async def closed_loop(conns: list[Connection], duration: float) -> Load:
    """Each connection sends pairs back to back until the deadline: maximum throughput."""
    load = Load()
    deadline = time.perf_counter_ns() + int(duration * 1e9)

    async def run(k: int) -> None:
        n = k
        while time.perf_counter_ns() < deadline:
            load.latencies.append(await conns[k].pair(n))
            n += len(conns)

    start = time.perf_counter()
    await asyncio.gather(*(run(k) for k in range(len(conns))))
    load.elapsed_s = time.perf_counter() - start
    return load


async def open_loop(conns: list[Connection], rate: float, duration: float) -> Load:
    """Pairs start on a fixed clock (pair i at t0 + i/rate), spread round-robin over the
    connections, so a slow reply cannot slow the offered load down (no coordinated omission
    from the generator; lateness is recorded as start lag)."""
    load = Load()
    total = int(rate * duration)
    interval_ns = 1e9 / rate
    t0 = time.perf_counter_ns() + 10_000_000

    async def run(k: int) -> None:
        for i in range(k, total, len(conns)):
            due = t0 + int(i * interval_ns)
            wait = due - time.perf_counter_ns()
            if wait > 0:
                await asyncio.sleep(wait / 1e9)
            load.start_lags.append(max(0, time.perf_counter_ns() - due))
            load.latencies.append(await conns[k].pair(i))

    start = time.perf_counter()
    await asyncio.gather(*(run(k) for k in range(len(conns))))
    load.elapsed_s = time.perf_counter() - start
    return load


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
