"""LeaseStore against a real Redis (see the ``url`` fixture): semantics, idempotency,
concurrency across connections and processes, a model-based random test, SCRIPT FLUSH survival.

Each test works on a fresh agent id and deletes only that agent's keys, so it never flushes data
that other tests or people may be using in the same database.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from redis import ConnectionError as RedisConnectionError
from redis import Redis as SyncRedis
from redis.asyncio import Redis

import sidecar.store
from sidecar.scripts import LuaScript
from sidecar.store import (
    LUA_DIR,
    CommitOutcome,
    JournalReader,
    LeaseStore,
    ReserveOutcome,
    StoreKeys,
    UsageEvent,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
NOW = 1_700_000_000_000
_REPO_ROOT = Path(sidecar.store.__file__).resolve().parents[1]
HOUR = 3_600_000
USD = 1_000_000


def new_agent() -> str:
    return f"agent_{uuid.uuid4()}"


def usage(cost: int, **kw: Any) -> UsageEvent:
    fields: dict[str, Any] = {
        "input_tokens": 10,
        "output_tokens": 20,
        "model": "gpt-test",
        "provider": "openai",
        "status": "completed",
        "ts_ms": NOW,
        "latency_ms": 123,
    }
    fields.update(kw)
    return UsageEvent(cost_micros=cost, **fields)


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


async def journal(r: Redis, store: LeaseStore) -> list[dict[str, Any]]:
    """The journal's entries, with each usage record decoded."""
    entries: list[tuple[Any, dict[Any, Any]]] = await r.xrange(store.keys.journal)  # type: ignore[assignment]
    decoded = [{_s(k): _s(v) for k, v in fields.items()} for _, fields in entries]
    return [{**entry, "usage": json.loads(entry["usage"])} for entry in decoded]


async def holds(r: Redis, store: LeaseStore) -> dict[str, int]:
    return {_s(k): int(v) for k, v in (await r.hgetall(store.keys.res)).items()}


async def drop(r: Redis, keys: StoreKeys) -> None:
    await r.delete(*astuple(keys))


def _reachable(url: str) -> bool:
    try:
        with SyncRedis.from_url(url, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except RedisConnectionError:
        return False


@pytest.fixture(scope="session")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``REDIS_URL`` if set, else the machine's Redis on DB 15, else an embedded Valkey (DB 15),
    so the tests run the same on a laptop, a developer machine and a fresh CI machine."""
    if env_url := os.environ.get("REDIS_URL"):
        yield env_url
    elif _reachable(DEFAULT_REDIS_URL):
        yield DEFAULT_REDIS_URL
    else:
        from iron.embedded import EmbeddedValkey

        with EmbeddedValkey(tmp_path_factory.mktemp("valkey")) as valkey:
            yield valkey.url().rsplit("/", 1)[0] + "/15"


@pytest.fixture
async def r(url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(url)
    yield client
    await client.aclose()


@pytest.fixture
async def store(r: Redis) -> AsyncIterator[LeaseStore]:
    s = LeaseStore(r, new_agent(), hold_ms=10_000, dedup_window_ms=HOUR)
    yield s
    await drop(r, s.keys)


# --- keys and validation -------------------------------------------------------------------


def test_keys_share_the_agent_hash_tag() -> None:
    k = StoreKeys.for_agent("agent_3f2c")
    assert astuple(k) == (
        "iron:{agent_3f2c}:lease",
        "iron:{agent_3f2c}:res",
        "iron:{agent_3f2c}:res_exp",
        "iron:{agent_3f2c}:seen",
        "iron:{agent_3f2c}:journal",
        "iron:{agent_3f2c}:members",
        "iron:{agent_3f2c}:provider",
        "iron:{agent_3f2c}:refresh_lock",
    )


@pytest.mark.parametrize("agent_id", ["", "a{b", "a}b"])
def test_agent_id_that_breaks_the_hash_tag_is_rejected(agent_id: str) -> None:
    with pytest.raises(ValueError, match="agent id"):
        StoreKeys.for_agent(agent_id)


async def test_invalid_amounts_and_status_are_rejected_before_redis(store: LeaseStore) -> None:
    with pytest.raises(ValueError, match="estimate"):
        await store.reserve("r", -1, NOW)
    with pytest.raises(ValueError, match="estimate"):
        await store.reserve("r", 1.5, NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cost"):
        await store.commit("r", usage(-5), NOW)
    with pytest.raises(ValueError, match="status"):
        await store.report("q", usage(5, status="ok"), NOW)
    with pytest.raises(ValueError, match="granted"):
        await store.install_lease("lease_1", -1, NOW + HOUR)


# --- install_lease -------------------------------------------------------------------------


async def test_install_new_lease(store: LeaseStore) -> None:
    assert await store.install_lease("lease_1", USD, NOW + HOUR) == USD
    snap = await store.snapshot()
    assert (snap.lease_id, snap.granted_micros, snap.spent_micros, snap.reserved_micros) == (
        "lease_1",
        USD,
        0,
        0,
    )
    assert snap.expires_at_ms == NOW + HOUR
    assert snap.remaining_micros == USD


async def test_top_up_takes_the_max_so_a_replay_is_harmless(store: LeaseStore) -> None:
    await store.install_lease("lease_1", USD, NOW + HOUR)
    await store.reserve("r1", 100_000, NOW)
    await store.commit("r1", usage(100_000), NOW)
    assert await store.install_lease("lease_1", 2 * USD, NOW + 2 * HOUR) == 2 * USD - 100_000
    # replayed and out-of-order top-ups: nothing granted twice, expiry never moves back
    assert await store.install_lease("lease_1", 2 * USD, NOW + 2 * HOUR) == 2 * USD - 100_000
    assert await store.install_lease("lease_1", USD, NOW + HOUR) == 2 * USD - 100_000
    snap = await store.snapshot()
    assert (snap.granted_micros, snap.spent_micros, snap.expires_at_ms) == (
        2 * USD,
        100_000,
        NOW + 2 * HOUR,
    )


async def test_new_lease_resets_spent_and_keeps_live_reservations(r: Redis, store: LeaseStore) -> None:
    await store.install_lease("lease_1", USD, NOW + HOUR)
    await store.reserve("r1", 300_000, NOW)
    await store.reserve("r2", 200_000, NOW)
    await store.commit("r2", usage(250_000), NOW)
    assert await store.install_lease("lease_2", 400_000, NOW + 2 * HOUR) == 100_000
    snap = await store.snapshot()
    assert (snap.lease_id, snap.granted_micros, snap.spent_micros, snap.reserved_micros) == (
        "lease_2",
        400_000,
        0,
        300_000,
    )
    # the carried-over reservation commits against the new lease
    result = await store.commit("r1", usage(300_000), NOW)
    assert result == (CommitOutcome.CHARGED, 100_000)
    assert (await journal(r, store))[-1]["lease_id"] == "lease_2"


# --- reserve -------------------------------------------------------------------------------


async def test_reserve_admits_exactly_up_to_the_grant(r: Redis, store: LeaseStore) -> None:
    await store.install_lease("lease_1", 10_000, NOW + HOUR)
    assert await store.reserve("r1", 6_000, NOW) == (ReserveOutcome.ADMITTED, 4_000)
    assert await store.reserve("r2", 4_001, NOW) == (ReserveOutcome.REFUSED, 4_000)
    assert await store.reserve("r3", 4_000, NOW) == (ReserveOutcome.ADMITTED, 0)
    # estimate 0 is admitted while remaining >= 0
    assert await store.reserve("r4", 0, NOW) == (ReserveOutcome.ADMITTED, 0)
    assert await store.reserve("r5", 1, NOW) == (ReserveOutcome.REFUSED, 0)
    assert await holds(r, store) == {"r1": 6_000, "r3": 4_000, "r4": 0}
    assert (await store.snapshot()).reserved_micros == 10_000
    assert await r.zscore(store.keys.res_exp, "r1") == NOW + 10_000


async def test_reserve_is_idempotent(r: Redis, store: LeaseStore) -> None:
    await store.install_lease("lease_1", 10_000, NOW + HOUR)
    assert await store.reserve("r1", 6_000, NOW) == (ReserveOutcome.ADMITTED, 4_000)
    for _ in range(3):
        # admitted again even though a second hold would no longer fit; held once
        assert await store.reserve("r1", 6_000, NOW) == (ReserveOutcome.ADMITTED, 4_000)
    assert await holds(r, store) == {"r1": 6_000}


async def test_reserve_without_lease(store: LeaseStore) -> None:
    assert await store.reserve("r1", 0, NOW) == (ReserveOutcome.NO_LEASE, 0)
    assert (await store.snapshot()).live_reservations == 0


async def test_reserve_on_expired_lease_is_refused_until_renewed(store: LeaseStore) -> None:
    await store.install_lease("lease_1", USD, NOW + 1_000)
    assert (await store.reserve("r1", 1, NOW + 999)).outcome is ReserveOutcome.ADMITTED
    assert await store.reserve("r2", 1, NOW + 1_000) == (ReserveOutcome.LEASE_EXPIRED, USD - 1)
    await store.install_lease("lease_1", USD, NOW + HOUR)
    assert (await store.reserve("r2", 1, NOW + 1_000)).outcome is ReserveOutcome.ADMITTED


async def test_reserve_releases_expired_holds_first_at_most_32(r: Redis, store: LeaseStore) -> None:
    await store.install_lease("lease_1", 40_000, NOW + HOUR)
    for i in range(40):
        await store.reserve(f"r{i:02}", 1_000, NOW, hold_ms=100)
    assert await store.reserve("late", 1_000, NOW) == (ReserveOutcome.REFUSED, 0)
    # 32 expired holds released by this call, then the new one admitted
    assert await store.reserve("late", 1_000, NOW + 100) == (ReserveOutcome.ADMITTED, 31_000)
    assert len(await holds(r, store)) == 40 - 32 + 1
    assert (await store.snapshot()).reserved_micros == 9_000


# --- commit --------------------------------------------------------------------------------


async def test_commit_charges_actual_releases_hold_and_journals(r: Redis, store: LeaseStore) -> None:
    await store.install_lease("lease_1", USD, NOW + HOUR)
    await store.reserve("r1", 10_000, NOW)
    # actual above the estimate is charged in full
    assert await store.commit("r1", usage(15_000), NOW) == (CommitOutcome.CHARGED, USD - 15_000)
    snap = await store.snapshot()
    assert (snap.spent_micros, snap.reserved_micros, snap.live_reservations) == (15_000, 0, 0)
    assert await r.zcard(store.keys.res_exp) == 0
    [event] = await journal(r, store)
    assert event == {
        "event_id": "r1",
        "lease_id": "lease_1",
        "cost": "15000",
        "unknown_reservation": "0",
        # the budget protocol's record, as the flusher will ship it
        "usage": {
            "request_id": "r1",
            "input_tokens": 10,
            "output_tokens": 20,
            "tokens": None,
            "cost_usd": 0.015,
            "model": "gpt-test",
            "provider": "openai",
            "timestamp": "2023-11-14T22:13:20Z",
            "status": "completed",
            "latency_ms": 123,
            "ic_token": None,
        },
    }


async def test_commit_replayed_is_charged_and_journaled_once(url: str, store: LeaseStore) -> None:
    await store.install_lease("lease_1", USD, NOW + HOUR)
    await store.reserve("r1", 10_000, NOW)
    results = [await store.commit("r1", usage(8_000), NOW + i) for i in range(10)]
    assert results[0] == (CommitOutcome.CHARGED, USD - 8_000)
    assert results[1:] == [(CommitOutcome.DUPLICATE, USD - 8_000)] * 9
    # and concurrently, over several connections
    await store.reserve("r2", 10_000, NOW)
    clients = [Redis.from_url(url) for _ in range(5)]
    try:
        stores = [LeaseStore(c, store.agent_id) for c in clients]
        outcomes = await asyncio.gather(*(stores[i % 5].commit("r2", usage(8_000), NOW) for i in range(10)))
    finally:
        for c in clients:
            await c.aclose()
    assert sorted(o.outcome.value for o in outcomes) == ["charged"] + ["duplicate"] * 9
    snap = await store.snapshot()
    assert (snap.spent_micros, snap.reserved_micros, snap.journal_length) == (16_000, 0, 2)


async def test_commit_of_unknown_or_expired_reservation_is_charged_and_flagged(
    r: Redis, store: LeaseStore
) -> None:
    await store.install_lease("lease_1", 10_000, NOW + HOUR)
    assert await store.commit("ghost", usage(3_000), NOW) == (
        CommitOutcome.CHARGED_UNKNOWN_RESERVATION,
        7_000,
    )
    await store.reserve("r1", 7_000, NOW, hold_ms=50)
    assert await store.expire_reservations(NOW + 50) == 1
    # usage is never dropped: charged in full even past the grant
    assert await store.commit("r1", usage(9_000), NOW + 60) == (
        CommitOutcome.CHARGED_UNKNOWN_RESERVATION,
        -2_000,
    )
    assert [e["unknown_reservation"] for e in await journal(r, store)] == ["1", "1"]
    assert (await store.snapshot()).spent_micros == 12_000


async def test_commit_and_report_without_any_lease_still_charge(r: Redis, store: LeaseStore) -> None:
    assert await store.commit("r1", usage(5_000), NOW) == (
        CommitOutcome.CHARGED_UNKNOWN_RESERVATION,
        -5_000,
    )
    assert await store.report("q1", usage(1_000, latency_ms=None), NOW) == (
        CommitOutcome.CHARGED,
        -6_000,
    )
    events = await journal(r, store)
    assert [(e["lease_id"], e["cost"], e["usage"]["latency_ms"]) for e in events] == [
        ("", "5000", 123),
        ("", "1000", None),
    ]
    snap = await store.snapshot()
    assert (snap.lease_id, snap.spent_micros) == (None, 6_000)


async def test_duplicate_commit_releases_a_stray_hold(r: Redis, store: LeaseStore) -> None:
    await store.install_lease("lease_1", USD, NOW + HOUR)
    await store.reserve("r1", 1_000, NOW)
    await store.commit("r1", usage(1_000), NOW)
    # a late replayed reserve holds again; the replayed commit must not leave it stuck
    await store.reserve("r1", 1_000, NOW)
    assert await store.commit("r1", usage(1_000), NOW) == (
        CommitOutcome.DUPLICATE,
        USD - 1_000,
    )
    snap = await store.snapshot()
    assert (snap.spent_micros, snap.reserved_micros, snap.journal_length) == (1_000, 0, 1)
    assert await holds(r, store) == {}


async def test_failed_call_is_journaled_with_its_status(r: Redis, store: LeaseStore) -> None:
    await store.install_lease("lease_1", USD, NOW + HOUR)
    await store.reserve("r1", 1_000, NOW)
    await store.commit("r1", usage(0, status="failed", output_tokens=0), NOW)
    [event] = await journal(r, store)
    assert (event["usage"]["status"], event["cost"], event["usage"]["output_tokens"]) == ("failed", "0", 0)


# --- dedup window --------------------------------------------------------------------------


async def test_seen_is_trimmed_after_the_window_boundedly(r: Redis) -> None:
    s = LeaseStore(r, new_agent(), dedup_window_ms=1_000)
    try:
        await r.zadd(s.keys.seen, {f"old{i}": NOW - 5_000 for i in range(100)})
        await s.report("q1", usage(1), NOW)
        assert await r.zcard(s.keys.seen) == 100 - 64 + 1  # at most 64 trimmed per call
        await s.report("q2", usage(1), NOW)
        assert await r.zcard(s.keys.seen) == 2
        # inside the window a replay is a duplicate; after it, the id is charged again
        assert (await s.report("q1", usage(1), NOW + 999)).outcome is CommitOutcome.DUPLICATE
        assert (await s.report("q1", usage(1), NOW + 1_001)).outcome is CommitOutcome.CHARGED
    finally:
        await drop(r, s.keys)


# --- report / cancel / expire --------------------------------------------------------------


async def test_report_charges_once_and_is_not_flagged(r: Redis, store: LeaseStore) -> None:
    await store.install_lease("lease_1", USD, NOW + HOUR)
    await store.reserve("r1", 100_000, NOW)
    assert await store.report("req_1", usage(2_000), NOW) == (
        CommitOutcome.CHARGED,
        USD - 102_000,
    )
    for _ in range(5):
        assert (await store.report("req_1", usage(2_000), NOW)).outcome is CommitOutcome.DUPLICATE
    # a report never touches holds
    assert await holds(r, store) == {"r1": 100_000}
    [event] = await journal(r, store)
    assert (event["event_id"], event["unknown_reservation"]) == ("req_1", "0")


async def test_cancel_releases_the_hold_once(r: Redis, store: LeaseStore) -> None:
    await store.install_lease("lease_1", 10_000, NOW + HOUR)
    await store.reserve("r1", 10_000, NOW)
    assert await store.cancel("r1") is True
    assert await store.cancel("r1") is False
    assert await store.cancel("never") is False
    snap = await store.snapshot()
    assert (snap.reserved_micros, snap.spent_micros, snap.journal_length) == (0, 0, 0)
    assert await r.zcard(store.keys.res_exp) == 0
    assert (await store.reserve("r2", 10_000, NOW)).outcome is ReserveOutcome.ADMITTED


async def test_expire_releases_only_passed_deadlines_up_to_limit(r: Redis, store: LeaseStore) -> None:
    await store.install_lease("lease_1", USD, NOW + HOUR)
    for i in range(5):
        await store.reserve(f"a{i}", 1_000, NOW, hold_ms=100)
    await store.reserve("b", 7_000, NOW, hold_ms=1_000)
    assert await store.expire_reservations(NOW + 99) == 0
    assert await store.expire_reservations(NOW + 100, limit=3) == 3
    assert await store.expire_reservations(NOW + 100) == 2
    assert await holds(r, store) == {"b": 7_000}
    assert (await store.snapshot()).reserved_micros == 7_000
    assert await store.expire_reservations(NOW + 1_000) == 1
    assert (await store.snapshot()).reserved_micros == 0


# --- scripts survive SCRIPT FLUSH ----------------------------------------------------------


async def test_scripts_survive_script_flush(r: Redis, store: LeaseStore) -> None:
    await store.install_lease("lease_1", USD, NOW + HOUR)
    await r.script_flush()
    assert (await store.reserve("r1", 1_000, NOW)).outcome is ReserveOutcome.ADMITTED
    await r.script_flush()
    assert (await store.commit("r1", usage(1_000), NOW)).outcome is CommitOutcome.CHARGED
    await r.script_flush()
    await store.reserve("r2", 1_000, NOW)
    await r.script_flush()
    assert await store.cancel("r2") is True
    await r.script_flush()
    assert (await store.report("q1", usage(1), NOW)).outcome is CommitOutcome.CHARGED
    await r.script_flush()
    assert await store.expire_reservations(NOW) == 0
    await r.script_flush()
    assert await store.install_lease("lease_1", USD, NOW + HOUR) == USD - 1_001
    # after a reload, calls go by EVALSHA again
    install = LuaScript.of((LUA_DIR / "install_lease.lua").read_text())
    assert await r.script_exists(install.sha) == [True]


@pytest.mark.parametrize("decoded", [False, True])
async def test_the_journal_reads_back_the_record_as_written(url: str, decoded: bool) -> None:
    client = Redis.from_url(url, decode_responses=decoded)
    s = LeaseStore(client, new_agent())
    try:
        await s.install_lease("lease_1", USD, NOW + HOUR)
        await s.commit("r1", usage(2_500, model="模型"), NOW)
        await s.report("q1", usage(1_000, latency_ms=None), NOW)
        reader = JournalReader(client, s.keys, "reader-1")
        await reader.ensure_group()
        entries = await reader.read_new(10, None)
        assert [(e.lease_id, json.loads(e.usage)["request_id"]) for e in entries] == [
            ("lease_1", "r1"),
            ("lease_1", "q1"),
        ]
        assert all(isinstance(e.usage, bytes) and isinstance(e.stream_id, str) for e in entries)
        first = json.loads(entries[0].usage)
        assert (first["cost_usd"], first["model"], first["latency_ms"]) == (0.0025, "模型", 123)
        assert json.loads(entries[1].usage)["latency_ms"] is None
        await reader.ack([e.stream_id for e in entries])
        assert await reader.depth() == 0
    finally:
        await drop(client, s.keys)
        await client.aclose()


async def test_works_with_decode_responses(url: str) -> None:
    client = Redis.from_url(url, decode_responses=True)
    s = LeaseStore(client, new_agent())
    try:
        await s.install_lease("lease_é", 5_000, NOW + HOUR)
        assert (await s.reserve("r1", 5_000, NOW)).outcome is ReserveOutcome.ADMITTED
        committed = await s.commit("r1", usage(4_000, model="模型"), NOW)
        assert committed.outcome is CommitOutcome.CHARGED
        snap = await s.snapshot()
        assert (snap.lease_id, snap.spent_micros, snap.remaining_micros) == (
            "lease_é",
            4_000,
            1_000,
        )
        [event] = await journal(client, s)
        assert event["usage"]["model"] == "模型"
    finally:
        await drop(client, s.keys)
        await client.aclose()


# --- concurrency ---------------------------------------------------------------------------

ESTIMATE = 7_000


async def _cycle(s: LeaseStore) -> bool:
    rid = f"res_{uuid.uuid4()}"
    result = await s.reserve(rid, ESTIMATE)
    if result.outcome is not ReserveOutcome.ADMITTED:
        return False
    assert result.remaining_micros >= 0
    await asyncio.sleep(0)
    assert (await s.commit(rid, usage(ESTIMATE))).outcome is CommitOutcome.CHARGED
    return True


async def _assert_exact_accounting(store: LeaseStore, admitted: int) -> None:
    snap = await store.snapshot()
    assert admitted * ESTIMATE <= USD
    assert admitted == USD // ESTIMATE  # actual == estimate, so every fitting slot gets used
    assert snap.spent_micros == admitted * ESTIMATE
    assert snap.journal_length == admitted
    assert (snap.reserved_micros, snap.live_reservations) == (0, 0)


async def test_concurrent_cycles_over_many_connections_never_overspend(url: str, store: LeaseStore) -> None:
    await store.install_lease("lease_1", USD, _now() + HOUR)
    agent = store.agent_id
    clients = [Redis.from_url(url) for _ in range(8)]
    try:
        stores = [LeaseStore(c, agent) for c in clients]
        outcomes = await asyncio.gather(*(_cycle(stores[i % 8]) for i in range(500)))
    finally:
        for c in clients:
            await c.aclose()
    await _assert_exact_accounting(store, sum(outcomes))


_WORKER = """
import asyncio, json, sys, uuid
from redis import ConnectionError as RedisConnectionError
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from sidecar.store import CommitOutcome, LeaseStore, ReserveOutcome, UsageEvent

async def main(url, agent, cycles, conns):
    clients = [Redis.from_url(url) for _ in range(conns)]
    for c in clients:
        await c.ping()
    stores = [LeaseStore(c, agent) for c in clients]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    async def cycle(i):
        s, rid = stores[i % conns], f"res_{uuid.uuid4()}"
        res = await s.reserve(rid, 7000)
        if res.outcome is not ReserveOutcome.ADMITTED:
            return 0
        assert res.remaining_micros >= 0
        u = UsageEvent(7000, 1, 1, "m", "p", "completed", 0)
        assert (await s.commit(rid, u)).outcome is CommitOutcome.CHARGED
        return 1
    admitted = sum(await asyncio.gather(*(cycle(i) for i in range(cycles))))
    for c in clients:
        await c.aclose()
    print(json.dumps({"admitted": admitted}), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


@pytest.mark.slow
async def test_concurrent_cycles_from_several_processes_never_overspend(url: str, store: LeaseStore) -> None:
    await store.install_lease("lease_1", USD, _now() + HOUR)
    agent = store.agent_id
    root = str(_REPO_ROOT)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            url,
            agent,
            "125",
            "3",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        for _ in range(4)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), 60)
            assert line == b"ready\n"
        results = await asyncio.wait_for(asyncio.gather(*(p.communicate(b"go\n") for p in procs)), 120)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    assert [p.returncode for p in procs] == [0] * 4
    admitted = sum(json.loads(out)["admitted"] for out, _ in results)
    await _assert_exact_accounting(store, admitted)


def _now() -> int:
    return time.time_ns() // 1_000_000


# --- model-based random test ---------------------------------------------------------------

M_HOLD = 2_000
M_WINDOW = 5_000
RIDS = st.sampled_from([f"r{i}" for i in range(6)])
QIDS = st.sampled_from([f"q{i}" for i in range(3)])


class LeaseMachine(RuleBasedStateMachine):
    """Runs random operations on the real store and on a plain-Python model of the same
    semantics; after every step the Redis state must equal the model's exactly."""

    loop: asyncio.AbstractEventLoop
    client: Redis

    def __init__(self) -> None:
        super().__init__()
        self.store = LeaseStore(self.client, new_agent(), hold_ms=M_HOLD, dedup_window_ms=M_WINDOW)
        self.now = NOW
        self.lease_id: str | None = None
        self.granted = self.spent = self.expires = 0
        self.holds: dict[str, int] = {}
        self.deadlines: dict[str, int] = {}
        self.seen: dict[str, int] = {}
        self.journal = self.charged_total = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(drop(self.client, self.store.keys))

    @property
    def remaining(self) -> int:
        return self.granted - self.spent - sum(self.holds.values())

    def _expire(self, limit: int) -> int:
        due = sorted((d, rid) for rid, d in self.deadlines.items() if d <= self.now)[:limit]
        for _, rid in due:
            del self.deadlines[rid], self.holds[rid]
        return len(due)

    def _charge(self, event_id: str, cost: int) -> bool:
        old = sorted((t, i) for i, t in self.seen.items() if t < self.now - M_WINDOW)[:64]
        for _, i in old:
            del self.seen[i]
        if event_id in self.seen:
            return False
        self.spent += cost
        self.charged_total += cost
        self.seen[event_id] = self.now
        self.journal += 1
        return True

    @rule(
        lease_id=st.sampled_from(["lease_a", "lease_b"]),
        granted=st.integers(0, 2_000_000),
        ttl=st.integers(-1_000, 60_000),
    )
    def install(self, lease_id: str, granted: int, ttl: int) -> None:
        if lease_id != self.lease_id:
            self.lease_id, self.granted, self.spent = lease_id, granted, 0
            self.expires = self.now + ttl
        else:
            self.granted = max(self.granted, granted)
            self.expires = max(self.expires, self.now + ttl)
        got = self.run(self.store.install_lease(lease_id, granted, self.now + ttl))
        assert got == self.remaining

    @rule(rid=RIDS, estimate=st.integers(0, 400_000))
    def reserve(self, rid: str, estimate: int) -> None:
        self._expire(32)
        fresh = False
        if rid in self.holds:
            expected = ReserveOutcome.ADMITTED
        elif self.lease_id is None:
            expected = ReserveOutcome.NO_LEASE
        elif self.now >= self.expires:
            expected = ReserveOutcome.LEASE_EXPIRED
        elif self.remaining < estimate:
            expected = ReserveOutcome.REFUSED
        else:
            expected, fresh = ReserveOutcome.ADMITTED, True
            self.holds[rid] = estimate
            self.deadlines[rid] = self.now + M_HOLD
        got = self.run(self.store.reserve(rid, estimate, self.now))
        assert got == (expected, self.remaining)
        if fresh:
            # the hard rule: a new hold never takes spent + reserved past granted (a replayed
            # reserve just reports the current remaining, negative after over-budget usage)
            assert got.remaining_micros >= 0

    @rule(rid=RIDS, cost=st.integers(0, 500_000))
    def commit(self, rid: str, cost: int) -> None:
        held = self.holds.pop(rid, None)
        self.deadlines.pop(rid, None)
        if not self._charge(rid, cost):
            expected = CommitOutcome.DUPLICATE
        elif held is None:
            expected = CommitOutcome.CHARGED_UNKNOWN_RESERVATION
        else:
            expected = CommitOutcome.CHARGED
        got = self.run(self.store.commit(rid, usage(cost), self.now))
        assert got == (expected, self.remaining)

    @rule(qid=QIDS, cost=st.integers(0, 500_000))
    def report(self, qid: str, cost: int) -> None:
        expected = CommitOutcome.CHARGED if self._charge(qid, cost) else CommitOutcome.DUPLICATE
        got = self.run(self.store.report(qid, usage(cost), self.now))
        assert got == (expected, self.remaining)

    @rule(rid=RIDS)
    def cancel(self, rid: str) -> None:
        existed = self.holds.pop(rid, None) is not None
        self.deadlines.pop(rid, None)
        assert self.run(self.store.cancel(rid)) is existed

    @rule(limit=st.integers(1, 4))
    def expire(self, limit: int) -> None:
        assert self.run(self.store.expire_reservations(self.now, limit)) == self._expire(limit)

    @rule(ms=st.integers(1, 3_000))
    def advance_time(self, ms: int) -> None:
        self.now += ms

    @rule()
    def script_flush(self) -> None:
        self.run(self.client.script_flush())

    @invariant()
    def redis_matches_model(self) -> None:
        snap = self.run(self.store.snapshot())
        real_holds = self.run(holds(self.client, self.store))
        deadlines = self.run(self.client.zrange(self.store.keys.res_exp, 0, -1, withscores=True))
        events = self.run(journal(self.client, self.store))
        assert real_holds == self.holds
        assert {_s(k): int(v) for k, v in deadlines} == self.deadlines
        assert snap.reserved_micros == sum(real_holds.values()) >= 0
        assert snap.live_reservations == len(self.holds)
        assert (snap.lease_id, snap.granted_micros, snap.spent_micros) == (
            self.lease_id,
            self.granted,
            self.spent,
        )
        assert snap.expires_at_ms == (self.expires if self.lease_id else 0)
        # every charge is in the journal exactly once: count and money agree
        assert snap.journal_length == len(events) == self.journal
        assert sum(int(e["cost"]) for e in events) == self.charged_total


def test_random_operations_match_the_model(url: str) -> None:
    loop = asyncio.new_event_loop()
    client = Redis.from_url(url)
    LeaseMachine.loop, LeaseMachine.client = loop, client
    try:
        run_state_machine_as_test(
            LeaseMachine,
            settings=settings(
                max_examples=60,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


# --- timing (printed, not asserted) --------------------------------------------------------


@pytest.mark.slow
async def test_print_latency_of_sequential_calls(
    store: LeaseStore, capsys: pytest.CaptureFixture[str]
) -> None:
    n = 10_000
    await store.install_lease("lease_1", 10**15, _now() + HOUR)
    u = usage(1_000)
    reserve_ns: list[int] = []
    commit_ns: list[int] = []
    clock = time.perf_counter_ns
    for i in range(n):
        rid = f"res_{i}"
        t0 = clock()
        await store.reserve(rid, 1_000)
        t1 = clock()
        await store.commit(rid, u)
        t2 = clock()
        reserve_ns.append(t1 - t0)
        commit_ns.append(t2 - t1)
    snap = await store.snapshot()
    assert snap.journal_length == n
    with capsys.disabled():
        for name, xs in (("reserve", reserve_ns), ("commit", commit_ns)):
            xs.sort()
            print(
                f"\n{name}: median {statistics.median(xs) / 1000:.0f} us, "
                f"p99 {xs[int(n * 0.99)] / 1000:.0f} us over {n} sequential calls"
            )
