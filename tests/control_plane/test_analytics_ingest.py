"""Analytics ingestion (POST /api/v1/analytics/events) on real PostgreSQL: each LLM call counted
and charged once, whichever path (analytics events, budget reports) or paths it arrives by, in
the right partition, with the ledger's invariants and the rollups checked after every step."""

import asyncio
import random
import secrets
from typing import Any

import asyncpg
import httpx
import pytest

from iron.money import charge_micros
from tests.conftest import AgentHandle, MakeAgent, open_lease
from tests.control_plane.helpers import assert_error, bearer, event, fingerprint, usage
from tests.ledger_checks import LedgerState, assert_ledger_invariants, assert_rollups_match

PATH = "/api/v1/analytics/events"


def without(body: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in fields}


async def post(client: httpx.AsyncClient, agent: AgentHandle, body: Any, status: int) -> dict[str, Any]:
    response = await client.post(PATH, headers=agent.headers, json=body)
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


def outcomes(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(item["event_id"], item["status"]) for item in result["events"]]


async def checked(pool: asyncpg.Pool, agent_id: str) -> LedgerState:
    state = await assert_ledger_invariants(pool, agent_id)
    await assert_rollups_match(pool, None)  # the all-agent rows too
    return state


async def test_one_event_is_accepted_once_then_acknowledged_as_a_duplicate(
    client: httpx.AsyncClient, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=10)
    body = event(cost=0.25)
    first = await post(client, agent, body, 202)
    assert first == {
        "accepted": 1,
        "duplicates": 0,
        "events": [{"event_id": body["event_id"], "status": "accepted"}],
    }
    again = await post(client, agent, body, 200)
    assert again == {
        "accepted": 0,
        "duplicates": 1,
        "events": [{"event_id": body["event_id"], "status": "duplicate"}],
    }
    state = await checked(pool, agent.id)
    # no open lease: spent, and all of it beyond a grant
    assert (state.spent, state.outstanding, state.overdrawn) == (250_000, 0, 250_000)
    row = await pool.fetchrow("SELECT * FROM usage_events WHERE agent_id = $1", agent.id)
    assert (row["source"], row["lease_id"], row["status"], row["latency_ms"]) == (
        "analytics",
        None,
        "completed",
        420,
    )


async def test_a_batch_with_duplicates_inside_it_and_calls_already_reported_by_the_sidecar(
    client: httpx.AsyncClient, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=100)
    lease = (await open_lease(client, agent, 10))["lease_id"]
    reported = await client.post(
        "/api/v1/budget/report",
        headers=agent.headers,
        json={"lease_id": lease, "reports": [usage(None, 1, "call-1"), usage(None, 2, "call-2")]},
    )
    assert reported.status_code == 200, reported.text
    batch = [
        event("call-1", 1, timestamp="2026-11-24T10:00:01.000Z"),  # the same call, a moment later
        event("new-1", 0.5),
        event("new-1", 0.75),  # repeated inside the batch: the first counts
        event("failed-1", 0, event_type="llm_request_failed", error_code="rate_limited", error_message="429"),
        event("call-2", 2),
    ]
    result = await post(client, agent, {"events": batch}, 202)
    assert outcomes(result) == [
        ("call-1", "duplicate"),
        ("new-1", "accepted"),
        ("new-1", "duplicate"),
        ("failed-1", "accepted"),
        ("call-2", "duplicate"),
    ]
    assert (result["accepted"], result["duplicates"]) == (2, 3)
    state = await checked(pool, agent.id)
    # the new call went to the open lease, which had room for it
    assert (state.spent, state.outstanding, state.overdrawn) == (3_500_000, 6_500_000, 0)
    stored = await pool.fetch(
        "SELECT event_id, cost_micros, status, error_code, lease_id, source FROM usage_events"
        " WHERE agent_id = $1 ORDER BY event_id",
        agent.id,
    )
    assert [tuple(row) for row in stored] == [
        ("call-1", 1_000_000, "completed", None, lease, "budget"),
        ("call-2", 2_000_000, "completed", None, lease, "budget"),
        ("failed-1", 0, "failed", "rate_limited", lease, "analytics"),
        ("new-1", 500_000, "completed", None, lease, "analytics"),
    ]
    # and the sidecar reporting a call the SDK already sent is a duplicate too
    late = await client.post(
        "/api/v1/budget/report",
        headers=agent.headers,
        json={"lease_id": lease, "reports": [usage(None, 0.5, "new-1"), usage(None, 0.1, "call-3")]},
    )
    assert (late.json()["accepted"], late.json()["duplicates"]) == (1, 1)
    state = await checked(pool, agent.id)
    assert state.spent == 3_600_000


async def test_usage_goes_to_the_roomiest_open_lease_and_beyond_its_grant_is_an_overdraw(
    client: httpx.AsyncClient, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=100)
    small = (await open_lease(client, agent, 1))["lease_id"]
    large = (await open_lease(client, agent, 3))["lease_id"]
    await post(client, agent, {"events": [event(cost=2), event(cost=0.5)]}, 202)
    state = await checked(pool, agent.id)
    assert (state.spent, state.outstanding, state.overdrawn) == (2_500_000, 1_500_000, 0)
    charged = await pool.fetch("SELECT DISTINCT lease_id FROM usage_events WHERE agent_id = $1", agent.id)
    assert [row["lease_id"] for row in charged] == [large]
    # now the small one has the most room (1 against 0.5), and 1.25 is beyond it
    await post(client, agent, event(cost=1.25), 202)
    state = await checked(pool, agent.id)
    assert (state.spent, state.outstanding, state.overdrawn) == (3_750_000, 500_000, 250_000)
    lease = await pool.fetchrow("SELECT spent_micros, overdrawn_micros FROM leases WHERE id = $1", small)
    assert tuple(lease) == (1_250_000, 250_000)


async def test_the_same_call_with_timestamps_in_different_partitions_is_counted_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=100)
    await post(client, agent, event("cross", 1, timestamp="2026-09-30T23:59:59.999Z"), 202)
    await post(client, agent, event("cross", 1, timestamp="2026-10-01T00:00:00.000Z"), 200)
    await post(client, agent, event("cross", 1, timestamp_ms=1_795_478_400_000, timestamp=None), 200)
    lease = (await open_lease(client, agent, 5))["lease_id"]
    report = {**usage(lease, 1, "cross"), "timestamp": "2026-11-24T00:00:00Z"}
    assert (await client.post("/api/v1/budget/report", headers=agent.headers, json=report)).status_code == 204
    rows = await pool.fetch(
        "SELECT tableoid::regclass::text AS partition, occurred_at FROM usage_events WHERE agent_id = $1",
        agent.id,
    )
    assert [row["partition"] for row in rows] == ["usage_events_p202609"]
    state = await checked(pool, agent.id)
    assert state.spent == 1_000_000


async def test_timestamps_far_from_now_land_in_the_default_partition_and_still_count(
    client: httpx.AsyncClient, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=100)
    batch = [
        event("old", 1, timestamp="2001-02-03T04:05:06.789Z"),
        event("future", 2, timestamp="2099-12-31T23:59:59.999+00:00"),
        event("epoch-ms", 3, timestamp=None, timestamp_ms=1_795_478_400_123),  # 2026-11-24T00:00:00.123Z
        event("offset", 4, timestamp="2026-11-24T01:30:00+02:00"),  # 2026-11-23T23:30:00Z
    ]
    await post(client, agent, {"events": batch}, 202)
    rows = await pool.fetch(
        "SELECT event_id, tableoid::regclass::text AS partition, occurred_at FROM usage_events"
        " WHERE agent_id = $1 ORDER BY occurred_at",
        agent.id,
    )
    assert [(row["event_id"], row["partition"]) for row in rows] == [
        ("old", "usage_events_default"),
        ("offset", "usage_events_p202611"),
        ("epoch-ms", "usage_events_p202611"),
        ("future", "usage_events_default"),
    ]
    assert rows[2]["occurred_at"].isoformat() == "2026-11-24T00:00:00.123000+00:00"
    assert rows[1]["occurred_at"].isoformat() == "2026-11-23T23:30:00+00:00"
    state = await checked(pool, agent.id)
    assert state.spent == 10_000_000


async def test_cost_in_micros_or_usd_and_usd_rounds_up(
    client: httpx.AsyncClient, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=100)
    await post(
        client,
        agent,
        {"events": [event("usd", 0.0000011), event("micros", None, cost_usd=None, cost_micros=7)]},
        202,
    )
    costs = await pool.fetch("SELECT event_id, cost_micros FROM usage_events WHERE agent_id = $1", agent.id)
    assert {row["event_id"]: row["cost_micros"] for row in costs} == {
        "usd": charge_micros(0.0000011),
        "micros": 7,
    }
    assert charge_micros(0.0000011) == 2
    await checked(pool, agent.id)


# --- refused ---------------------------------------------------------------------------------------

BAD: list[tuple[str, Any, set[str]]] = [
    ("empty object", {}, {"event_id", "event_type", "model", "provider", "input_tokens", "output_tokens"}),
    (
        "every field wrong",
        {
            "event_id": "",
            "event_type": "llm_request_started",
            "timestamp": "yesterday",
            "model": 7,
            "provider": "x" * 201,
            "input_tokens": -1,
            "output_tokens": 1.5,
            "cost_usd": -0.01,
            "latency_ms": -5,
            "error_code": "e" * 101,
        },
        {
            "event_id",
            "event_type",
            "timestamp",
            "model",
            "provider",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "latency_ms",
            "error_code",
        },
    ),
    ("both timestamps and both costs", event(timestamp_ms=1, cost_micros=5), {"body"}),
    ("neither timestamp nor cost", event(timestamp=None, cost_usd=None), {"body"}),
    ("out-of-range time", event(timestamp_ms=253_402_300_800_000, timestamp=None), {"timestamp_ms"}),
    ("an empty batch", {"events": []}, {"events"}),
    ("a batch too large", {"events": [event() for _ in range(1001)]}, {"events"}),
    (
        "errors in three events of a batch",
        {"events": [event(), event(input_tokens="many"), event(cost_usd=None), without(event(), "event_id")]},
        {"events[1].input_tokens", "events[2]", "events[3].event_id"},
    ),
    ("not an object", [event()], {"body"}),
    ("NUL in a label", event(model="gpt\u0000"), {"model"}),
]


@pytest.mark.parametrize(("case", "body", "fields"), BAD, ids=[case for case, _, _ in BAD])
async def test_a_bad_event_is_400_naming_every_field_and_writes_nothing(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    make_agent: MakeAgent,
    case: str,
    body: Any,
    fields: set[str],
) -> None:
    agent = await make_agent(budget=10)
    await post(client, agent, event(), 202)  # something to disturb
    before = await fingerprint(pool)
    response = await client.post(PATH, headers=agent.headers, json=body)
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert set(error["fields"]) == fields, (case, error)
    assert await fingerprint(pool) == before


async def test_malformed_json_is_400_and_writes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=10)
    before = await fingerprint(pool)
    response = await client.post(
        PATH, headers={**agent.headers, "Content-Type": "application/json"}, content=b'{"events": ['
    )
    assert assert_error(response, 400, "VALIDATION_ERROR")["fields"] == {"body": "Malformed JSON"}
    assert await fingerprint(pool) == before


async def test_ingestion_takes_an_ic_token_only(
    client: httpx.AsyncClient, pool: asyncpg.Pool, make_agent: MakeAgent, admin_headers: dict[str, str]
) -> None:
    agent = await make_agent(budget=10)
    revoked = await make_agent(budget=10)
    response = await client.delete(f"/api/v1/agents/{revoked.id}/ic-token", headers=admin_headers)
    assert response.status_code == 204, response.text
    before = await fingerprint(pool)
    for headers in ({}, admin_headers, bearer(f"ic_{secrets.token_urlsafe(32)}"), revoked.headers):
        assert_error(await client.post(PATH, headers=headers, json=event()), 401, "AUTH_INVALID_TOKEN")
    assert await fingerprint(pool) == before
    assert (await client.post(PATH, headers=agent.headers, json=event())).status_code == 202
    # the token may also come in the body, as in the budget protocol
    fresh = await make_agent(budget=10)
    body = {"events": [event()], "ic_token": fresh.ic_token}
    assert (await client.post(PATH, json=body)).status_code == 202


# --- concurrency -----------------------------------------------------------------------------------


async def test_concurrent_overlapping_batches_through_both_paths_and_processes_count_once(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    make_agent: MakeAgent,
    control_plane_processes: list[str],
) -> None:
    """Many batches sharing event ids, sent at once to this app and to two other control-plane
    processes, as analytics events and as budget reports, for two agents: each id counted once."""
    rng = random.Random(5)
    agents = [await make_agent(budget=1000), await make_agent(budget=1000)]
    leases = {agent.id: (await open_lease(client, agent, 20))["lease_id"] for agent in agents}
    costs = {f"c{n}": rng.randint(1, 400_000) for n in range(120)}
    urls = [None, *control_plane_processes]

    def batch() -> list[str]:
        return rng.sample(sorted(costs), 40)

    in_flight = asyncio.Semaphore(12)  # PostgreSQL's connections are shared with the rest of the suite

    async def send(agent: AgentHandle, ids_: list[str], url: str | None, as_report: bool) -> int:
        async with in_flight:
            return await send_now(agent, ids_, url, as_report)

    async def send_now(agent: AgentHandle, ids_: list[str], url: str | None, as_report: bool) -> int:
        if as_report:
            calls = [{**usage(None, costs[i] / 1e6, i)} for i in ids_]
            path, body = "/api/v1/budget/report", {"lease_id": leases[agent.id], "reports": calls}
        else:
            path = PATH
            body = {"events": [event(i, None, cost_usd=None, cost_micros=costs[i]) for i in ids_]}
        if url is None:
            response = await client.post(path, headers=agent.headers, json=body)
        else:
            async with httpx.AsyncClient(base_url=url, timeout=30) as other:
                response = await other.post(path, headers=agent.headers, json=body)
        assert response.status_code in (200, 202), response.text
        accepted: int = response.json()["accepted"]
        return accepted

    jobs = [send(agent, batch(), urls[n % 3], as_report=n % 4 == 0) for n in range(24) for agent in agents]
    accepted = await asyncio.gather(*jobs)
    for agent in agents:
        seen = await pool.fetch(
            "SELECT event_id, cost_micros FROM usage_events WHERE agent_id = $1", agent.id
        )
        assert len(seen) == len({row["event_id"] for row in seen})
        state = await checked(pool, agent.id)
        assert state.spent == sum(costs[row["event_id"]] for row in seen)
    total_seen = await pool.fetchval(
        "SELECT count(*) FROM usage_events WHERE agent_id = ANY($1::text[])", [agent.id for agent in agents]
    )
    assert sum(accepted) == total_seen
