"""Agent runtimes for the fault tests: reserve -> (the LLM call) -> commit cycles over HTTP.

A runtime here behaves as a careful real one does: it commits only what a reserve admitted,
with the actual cost equal to the estimate, and retries a commit whose answer it did not get
(on another sidecar replica when its own is gone) until it gets a 204; commit is idempotent by
reservation id, so a retry is never charged twice.

:class:`Load` runs runtimes as tasks of the caller's event loop; ``python -m
tests.sidecar.runtime_load`` is a runtime process of its own that fires a burst of concurrent
cycles once it reads ``go`` on stdin and prints what happened as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from iron.money import charge_micros

TRANSPORT_ERROR = -1  # recorded instead of a status when no answer came


def commit_body(reservation_id: str, cost_usd: float) -> dict[str, Any]:
    return {
        "reservation_id": reservation_id,
        "cost_usd": cost_usd,
        "input_tokens": 100,
        "output_tokens": 20,
        "model": "gpt-4o-mini",
        "provider": "openai",
        "status": "completed",
    }


@dataclass(frozen=True, slots=True)
class Reserve:
    worker: int
    started: float  # monotonic
    finished: float
    status: int  # HTTP status, or TRANSPORT_ERROR

    @property
    def latency(self) -> float:
        return self.finished - self.started


@dataclass
class Outcomes:
    #: reservation id -> cost micros, for every reservation whose commit got a 204
    committed: dict[str, int] = field(default_factory=dict)
    admitted: set[str] = field(default_factory=set)
    #: admitted, but no 204 for the commit before the runtime gave up
    uncommitted: set[str] = field(default_factory=set)
    reserves: list[Reserve] = field(default_factory=list)
    refusal_codes: Counter[str] = field(default_factory=Counter)
    commit_failures: Counter[int] = field(default_factory=Counter)
    commit_outcomes: Counter[str] = field(default_factory=Counter)

    def statuses(self, since: float = 0.0, until: float = float("inf")) -> Counter[int]:
        return Counter(r.status for r in self.reserves if r.started >= since and r.finished <= until)


async def commit_until_acknowledged(
    http: httpx.AsyncClient,
    urls: list[str],
    first: int,
    reservation_id: str,
    cost_usd: float,
    out: Outcomes,
    deadline_s: float,
) -> None:
    """Commit, retrying on other replicas and after errors, until a 204 or the deadline."""
    give_up = time.monotonic() + deadline_s
    for attempt in itertools.count():
        url = urls[(first + attempt) % len(urls)]
        try:
            response = await http.post(f"{url}/v1/commit", json=commit_body(reservation_id, cost_usd))
        except httpx.TransportError:
            out.commit_failures[TRANSPORT_ERROR] += 1
        else:
            if response.status_code == 204:
                out.committed[reservation_id] = charge_micros(cost_usd)
                out.commit_outcomes[response.headers.get("x-iron-outcome", "?")] += 1
                return
            out.commit_failures[response.status_code] += 1
        if time.monotonic() > give_up:
            out.uncommitted.add(reservation_id)
            return
        await asyncio.sleep(0.05)


async def cycle(
    http: httpx.AsyncClient,
    urls: list[str],
    first: int,
    reservation_id: str,
    cost_usd: float,
    out: Outcomes,
    worker: int = 0,
    commit_deadline_s: float = 30.0,
) -> int:
    """One reserve -> commit; returns the reserve's status (or TRANSPORT_ERROR)."""
    started = time.monotonic()
    try:
        response = await http.post(
            f"{urls[first % len(urls)]}/v1/reserve",
            json={"estimated_cost_usd": cost_usd, "request_id": reservation_id},
        )
    except httpx.TransportError:
        out.reserves.append(Reserve(worker, started, time.monotonic(), TRANSPORT_ERROR))
        return TRANSPORT_ERROR
    out.reserves.append(Reserve(worker, started, time.monotonic(), response.status_code))
    if response.status_code == 200:
        assert response.json()["reservation_id"] == reservation_id
        out.admitted.add(reservation_id)
        # (the LLM call would be made here)
        await commit_until_acknowledged(http, urls, first, reservation_id, cost_usd, out, commit_deadline_s)
    elif response.status_code >= 400:
        try:
            out.refusal_codes[response.json()["error"]["code"]] += 1
        except (ValueError, KeyError, TypeError):
            out.refusal_codes["(not an error body)"] += 1
    return response.status_code


class Load:
    """``workers`` runtimes cycling against the given sidecars until :meth:`stop`.

    A worker that cannot reach its sidecar moves on to the next one. ``pace_s`` is slept
    between cycles, so the spend rate stays in the test's hands.
    """

    def __init__(self, urls: list[str], *, cost_usd: float, workers: int, pace_s: float, prefix: str) -> None:
        self.urls = urls
        self.cost_usd = cost_usd
        self.workers = workers
        self.pace_s = pace_s
        self.prefix = prefix
        self.out = Outcomes()
        self._stop = asyncio.Event()
        self._http = httpx.AsyncClient(
            timeout=10.0,
            limits=httpx.Limits(max_connections=4 * workers, max_keepalive_connections=4 * workers),
        )
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> Load:
        self._tasks = [asyncio.create_task(self._worker(n)) for n in range(self.workers)]
        return self

    async def stop(self) -> Outcomes:
        self._stop.set()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self._http.aclose()
        return self.out

    async def abort(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    async def _worker(self, n: int) -> None:
        target = n
        for i in itertools.count():
            if self._stop.is_set():
                return
            status = await cycle(
                self._http, self.urls, target, f"{self.prefix}-{n}-{i}", self.cost_usd, self.out, n
            )
            if status == TRANSPORT_ERROR:
                target += 1  # that replica is gone: use another one
            await asyncio.sleep(self.pace_s if status == 200 else max(self.pace_s, 0.05))


async def _burst(urls: list[str], cycles: int, cost_usd: float, prefix: str) -> dict[str, Any]:
    out = Outcomes()
    limits = httpx.Limits(max_connections=cycles + 8, max_keepalive_connections=cycles + 8)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as http:
        for url in urls:
            (await http.get(f"{url}/healthz")).raise_for_status()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # "go": every runtime process starts at once
        statuses = await asyncio.gather(
            *(cycle(http, urls, i, f"{prefix}-{i}", cost_usd, out) for i in range(cycles))
        )
    return {
        "statuses": statuses,
        "committed": out.committed,
        "uncommitted": sorted(out.uncommitted),
        "refusal_codes": dict(out.refusal_codes),
        "commit_outcomes": dict(out.commit_outcomes),
        "commit_failures": {str(k): v for k, v in out.commit_failures.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="a runtime process: a burst of reserve/commit cycles")
    parser.add_argument("--sidecar", action="append", required=True, help="sidecar base URL (repeatable)")
    parser.add_argument("--cycles", type=int, required=True)
    parser.add_argument("--cost", type=float, required=True, help="USD per call, estimate == actual")
    parser.add_argument("--prefix", required=True, help="reservation id prefix, unique per process")
    args = parser.parse_args()
    result = asyncio.run(_burst(args.sidecar, args.cycles, args.cost, args.prefix))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
