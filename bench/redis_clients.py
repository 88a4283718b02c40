"""Which client carries the sidecar's Lua calls: redis-py's script objects or sidecar.scripts.

Runs the real ``reserve.lua`` sequentially (latency) and from 32 concurrent
coroutines (throughput) through each client against ``REDIS_URL``, and writes
``bench/results/redis_clients.md`` and ``.json``. ``python -m bench.redis_clients``.
"""

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as redis
import uvloop

from sidecar.scripts import LuaScript, ScriptClient
from sidecar.store import LUA_DIR

RESULTS = Path(__file__).resolve().parent / "results"
SEQUENTIAL = 20_000
CONCURRENCY, PER_WORKER = 32, 1_000
KEYS = ("iron:{bench}:lease", "iron:{bench}:res", "iron:{bench}:res_exp")

Call = Callable[[str], Awaitable[object]]


def _percentile(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * q))] / 1000


async def _measure(call: Call, tag: str) -> dict[str, float]:
    samples = []
    for n in range(SEQUENTIAL):
        started = time.perf_counter_ns()
        await call(f"{tag}-s{n}")
        samples.append(time.perf_counter_ns() - started)
    samples.sort()

    async def worker(w: int) -> None:
        for n in range(PER_WORKER):
            await call(f"{tag}-c{w}-{n}")

    started_s = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started_s
    return {
        "p50_us": _percentile(samples, 0.5),
        "p99_us": _percentile(samples, 0.99),
        "calls_per_s": CONCURRENCY * PER_WORKER / elapsed,
    }


async def main() -> None:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14")
    source = (LUA_DIR / "reserve.lua").read_text()
    admin = redis.Redis.from_url(url)
    await admin.hset(
        KEYS[0],
        mapping={"id": "lease_bench", "granted": 10**15, "spent": 0, "reserved": 0, "expires_at": 10**15},
    )
    py_script = admin.register_script(source)
    ours, lua = ScriptClient.from_url(url), LuaScript.of(source)
    far = 10**14  # a hold deadline no run reaches

    async def redis_py(rid: str) -> object:
        return await py_script(keys=list(KEYS), args=[rid, 1, 1, far])

    async def script_client(rid: str) -> object:
        return await ours.run(lua, KEYS, (rid, 1, 1, far))

    results = {
        "redis-py Script": await _measure(redis_py, "py"),
        "sidecar.scripts": await _measure(script_client, "sc"),
    }
    await admin.delete(*KEYS)
    await admin.aclose()
    await ours.aclose()

    base = results["redis-py Script"]
    lines = [
        "# Redis client for the sidecar's Lua calls",
        "",
        f"`python -m bench.redis_clients`: `reserve.lua`, {SEQUENTIAL:,} sequential calls for latency, "
        f"{CONCURRENCY} coroutines x {PER_WORKER:,} calls for throughput, one process.",
        "",
        "| client | p50 µs | p99 µs | calls/s (32 concurrent) | p50 vs redis-py | throughput vs redis-py |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | {r['calls_per_s']:,.0f} | "
            f"{base['p50_us'] / r['p50_us']:.2f}x | {r['calls_per_s'] / base['calls_per_s']:.2f}x |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "redis_clients.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "redis_clients.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    uvloop.run(main())
