"""The sidecar end to end: runtime calls in, Lua on Redis, batched reports to real control planes."""

import asyncio
import secrets
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from sidecar.config import ConfigError, SidecarSettings
from tests.conftest import FAKE_PROVIDER_KEY, MakeAgent
from tests.ledger_checks import assert_ledger_invariants
from tests.sidecar.conftest import StartSidecar


def commit_body(reservation_id: str, cost: float, **extra: Any) -> dict[str, Any]:
    return {
        "reservation_id": reservation_id,
        "cost_usd": cost,
        "input_tokens": 10,
        "output_tokens": 5,
        "model": "gpt-4o-mini",
        "status": "completed",
        **extra,
    }


async def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_reserve_commit_reaches_the_ledger_once(
    pool: asyncpg.Pool, make_agent: MakeAgent, start_sidecar: StartSidecar
) -> None:
    agent = await make_agent(budget=20)
    _, http = await start_sidecar(agent, IRON_LEASE_USD="5")
    reserved = await http.post("/v1/reserve", json={"estimated_cost_usd": 0.25})
    assert reserved.status_code == 200, reserved.text
    reservation = reserved.json()["reservation_id"]
    committed = await http.post("/v1/commit", json=commit_body(reservation, 0.2))
    assert committed.status_code == 204
    assert committed.headers["x-iron-outcome"] == "charged"
    replay = await http.post("/v1/commit", json=commit_body(reservation, 0.2))
    assert replay.headers["x-iron-outcome"] == "duplicate"

    async def reported() -> bool:
        return await pool.fetchval("SELECT spent_micros FROM agents WHERE id = $1", agent.id) == 200_000

    await wait_for(reported)
    budget = (await http.get("/v1/budget")).json()
    assert budget["spent_usd"] == 0.2
    assert budget["reserved_usd"] == 0.0
    await wait_for(lambda: _journal_empty(http))
    await assert_ledger_invariants(pool, agent.id)


async def _journal_empty(http: httpx.AsyncClient) -> bool:
    return bool((await http.get("/v1/budget")).json()["pending_journal"] == 0)


async def test_the_hard_cap_holds_and_refusals_are_402(
    pool: asyncpg.Pool, make_agent: MakeAgent, start_sidecar: StartSidecar
) -> None:
    agent = await make_agent(budget=1)
    _, http = await start_sidecar(agent, IRON_LEASE_USD="0.4")

    async def call(n: int) -> bool:
        response = await http.post("/v1/reserve", json={"estimated_cost_usd": 0.03, "request_id": f"c{n}"})
        if response.status_code == 402:
            assert response.json()["error"]["code"] == "BUDGET_EXHAUSTED"
            return False
        assert response.status_code == 200, response.text
        await http.post("/v1/commit", json=commit_body(f"c{n}", 0.03))
        return True

    admitted = 0
    for wave in range(8):  # waves, so that refreshes can top the lease up in between
        admitted += sum(await asyncio.gather(*(call(wave * 20 + i) for i in range(20))))
        await asyncio.sleep(0.1)
    assert admitted == 33  # floor($1 / $0.03): every cent the budget allows, and not one more
    await wait_for(lambda: _journal_empty(http))
    state = await assert_ledger_invariants(pool, agent.id)
    assert state.spent == 33 * 30_000
    assert state.overdrawn == 0


async def test_cancel_releases_and_unknown_commit_is_still_charged(
    pool: asyncpg.Pool, make_agent: MakeAgent, start_sidecar: StartSidecar
) -> None:
    agent = await make_agent(budget=5)
    _, http = await start_sidecar(agent, IRON_LEASE_USD="2")
    reservation = (await http.post("/v1/reserve", json={"estimated_cost_usd": 1.5})).json()["reservation_id"]
    assert (await http.get("/v1/budget")).json()["reserved_usd"] == 1.5
    cancelled = await http.post("/v1/cancel", json={"reservation_id": reservation})
    assert cancelled.headers["x-iron-outcome"] == "released"
    assert (await http.get("/v1/budget")).json()["reserved_usd"] == 0.0
    unknown = await http.post("/v1/commit", json=commit_body("never-reserved", 0.1))
    assert unknown.status_code == 204
    assert unknown.headers["x-iron-outcome"] == "charged_unknown_reservation"
    report = await http.post(
        "/v1/report", json={**commit_body("x", 0.05), "request_id": f"rep-{secrets.token_hex(3)}"}
    )
    assert report.status_code == 204
    await wait_for(lambda: _journal_empty(http))

    async def charged() -> bool:
        return await pool.fetchval("SELECT spent_micros FROM agents WHERE id = $1", agent.id) == 150_000

    await wait_for(charged)
    await assert_ledger_invariants(pool, agent.id)


async def test_bad_input_is_400_with_every_field(make_agent: MakeAgent, start_sidecar: StartSidecar) -> None:
    agent = await make_agent(budget=5)
    _, http = await start_sidecar(agent)
    response = await http.post("/v1/commit", json={"reservation_id": "", "cost_usd": -1, "status": "maybe"})
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert set(fields) == {"reservation_id", "cost_usd", "input_tokens", "output_tokens", "model", "status"}
    assert (await http.post("/v1/reserve", content=b"{nope")).status_code == 400
    assert (await http.get("/v1/nothing")).status_code == 404
    assert (await http.get("/v1/reserve")).status_code == 405
    assert (await http.get("/v1/budget")).json()["spent_usd"] == 0.0


async def test_provider_key_health_and_metrics(make_agent: MakeAgent, start_sidecar: StartSidecar) -> None:
    agent = await make_agent(budget=5)
    _, http = await start_sidecar(agent)
    provider = await http.get("/v1/provider")
    assert provider.status_code == 200
    assert provider.json()["api_key"] == FAKE_PROVIDER_KEY
    assert (await http.get("/healthz")).json()["status"] == "ok"
    await http.post("/v1/reserve", json={"estimated_cost_usd": 0.01})
    metrics = (await http.get("/metrics")).text
    assert 'iron_sidecar_reservations_total{outcome="admitted"} 1.0' in metrics
    assert "iron_sidecar_journal_depth" in metrics


async def test_shutdown_flushes_and_returns_the_lease(
    pool: asyncpg.Pool, make_agent: MakeAgent, start_sidecar: StartSidecar
) -> None:
    agent = await make_agent(budget=10)
    sidecar, http = await start_sidecar(agent, IRON_LEASE_USD="4", batch_age_ms=60_000, batch_size=1000)
    for _ in range(5):
        rid = (await http.post("/v1/reserve", json={"estimated_cost_usd": 0.1})).json()["reservation_id"]
        await http.post("/v1/commit", json=commit_body(rid, 0.1))
    lease_id = sidecar.lease.lease_id
    await sidecar.stop()
    status = await pool.fetchval("SELECT status FROM leases WHERE id = $1", lease_id)
    assert status == "closed"
    state = await assert_ledger_invariants(pool, agent.id)
    assert (state.spent, state.outstanding, state.available) == (500_000, 0, 9_500_000)


def report_body(request_id: str, cost: float) -> dict[str, Any]:
    body = commit_body(request_id, cost)
    body["request_id"] = body.pop("reservation_id")
    return body


async def test_a_replay_after_the_dedup_window_is_still_counted_once_by_the_ledger(
    pool: asyncpg.Pool, make_agent: MakeAgent, start_sidecar: StartSidecar, redis_url: str
) -> None:
    """The sidecar forgets charged ids after its window (its Redis memory stays bounded); a later
    replay is then charged to the lease again, the safe side, and the control plane still counts
    the call once."""
    agent = await make_agent(budget=20)
    sidecar, http = await start_sidecar(
        agent, IRON_LEASE_USD="5", IRON_DEDUP_WINDOW_S="1", IRON_RESERVATION_HOLD_MS="500"
    )

    async def report(request_id: str) -> str:
        reply = await http.post("/v1/report", json=report_body(request_id, 0.1))
        return reply.headers["x-iron-outcome"]

    outcomes = [await report("call-1"), await report("call-1")]
    await asyncio.sleep(1.1)
    outcomes += [await report("call-2"), await report("call-1")]
    assert outcomes == ["charged", "duplicate", "charged", "charged"]
    store = sidecar.lease.store
    assert store is not None
    client = Redis.from_url(redis_url)
    try:  # the second report trimmed the first id; the replay put it back
        assert await client.zcard(store.keys.seen) == 2
    finally:
        await client.aclose()
    assert (await http.get("/v1/budget")).json()["spent_usd"] == 0.3  # the lease counted it twice

    async def reported() -> bool:
        return await pool.fetchval("SELECT count(*) FROM usage_event_ids WHERE agent_id = $1", agent.id) == 2

    await wait_for(reported)
    await wait_for(lambda: _journal_empty(http))
    assert await pool.fetchval("SELECT spent_micros FROM agents WHERE id = $1", agent.id) == 200_000
    await assert_ledger_invariants(pool, agent.id)


def test_the_dedup_window_setting_is_checked() -> None:
    env = {"IRON_CONTROL_PLANE_URL": "http://cp", "IRON_IC_TOKEN": "ic_x", "REDIS_URL": "redis://r"}
    assert SidecarSettings.from_env(env).dedup_window_ms == 3_600_000
    assert SidecarSettings.from_env({**env, "IRON_DEDUP_WINDOW_S": "90"}).dedup_window_ms == 90_000
    with pytest.raises(ConfigError, match="IRON_DEDUP_WINDOW_S"):
        SidecarSettings.from_env({**env, "IRON_DEDUP_WINDOW_S": "30"})  # shorter than a hold
