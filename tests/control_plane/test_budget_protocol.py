"""The budget protocol end to end, on real PostgreSQL, with the ledger checked after each step."""

from typing import Any

import asyncpg

from iron.crypto import decrypt_ip_token
from tests.conftest import FAKE_PROVIDER_KEY, MakeAgent, open_lease
from tests.control_plane.helpers import sweep_until, usage
from tests.ledger_checks import assert_ledger_invariants


async def test_handshake_grants_a_lease_and_an_ip_token_only_its_ic_token_opens(
    client: Any, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=100)
    response = await client.post(
        "/api/v1/budget/handshake", headers=agent.headers, json={"requested_budget": 10}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["budget_granted"] == 10.0
    assert body["budget_remaining"] == 90.0
    assert body["lease_id"].startswith("lease_")
    assert body["expires_at"].endswith("Z")
    assert body["provider"]["type"] == "openai"
    assert decrypt_ip_token(agent.ic_token, body["ip_token"]) == FAKE_PROVIDER_KEY
    other = await make_agent(budget=1)
    try:
        decrypt_ip_token(other.ic_token, body["ip_token"])
        raise AssertionError("another IC token opened the IP token")
    except ValueError:
        pass
    state = await assert_ledger_invariants(pool, agent.id)
    assert (state.spent, state.outstanding, state.available) == (0, 10_000_000, 90_000_000)


async def test_no_double_charge_and_refresh_keeps_the_unspent_part(
    client: Any, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    """handshake $10, report $5, refresh $20 on $100: spent $5, available $70, lease still open."""
    agent = await make_agent(budget=100)
    lease = await open_lease(client, agent, 10)
    reported = await client.post(
        "/api/v1/budget/report", headers=agent.headers, json=usage(lease["lease_id"], 5)
    )
    assert reported.status_code == 204
    refreshed = await client.post(
        "/api/v1/budget/refresh",
        headers=agent.headers,
        json={"lease_id": lease["lease_id"], "requested_budget": 20},
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["budget_granted"] == 20.0
    assert refreshed.json()["budget_remaining"] == 70.0
    state = await assert_ledger_invariants(pool, agent.id)
    assert (state.spent, state.available) == (5_000_000, 70_000_000)
    status = await pool.fetchval("SELECT status FROM leases WHERE id = $1", lease["lease_id"])
    assert status == "open"
    got = (await client.get(f"/api/v1/agents/{agent.id}", headers=await _admin(client))).json()
    assert (got["spent"], got["outstanding"], got["remaining"]) == (5.0, 25.0, 70.0)


async def _admin(client: Any) -> dict[str, str]:
    from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, login

    return await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)


async def test_return_credits_exactly_the_unreported_remainder_whatever_the_client_claims(
    client: Any, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=100)
    lease = await open_lease(client, agent, 10)
    await client.post("/api/v1/budget/report", headers=agent.headers, json=usage(lease["lease_id"], 3.5))
    returned = await client.post(
        "/api/v1/budget/return",
        headers=agent.headers,
        json={"lease_id": lease["lease_id"], "final_spent_usd": 0.0, "returning_usd": 10.0},
    )
    assert returned.status_code == 200, returned.text
    assert returned.json() == {
        "lease_id": lease["lease_id"],
        "returned": 6.5,
        "budget_remaining": 96.5,
        "lease_status": "closed",
    }
    again = await client.post(
        "/api/v1/budget/return", headers=agent.headers, json={"lease_id": lease["lease_id"]}
    )
    assert again.json()["returned"] == 0.0
    state = await assert_ledger_invariants(pool, agent.id)
    assert (state.spent, state.outstanding, state.available) == (3_500_000, 0, 96_500_000)


async def test_a_report_replayed_ten_times_is_charged_once(
    client: Any, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=50)
    lease = await open_lease(client, agent, 5)
    body = usage(lease["lease_id"], 0.015, request_id="call-replayed")
    for _ in range(10):
        response = await client.post("/api/v1/budget/report", headers=agent.headers, json=body)
        assert response.status_code == 204
    state = await assert_ledger_invariants(pool, agent.id)
    assert state.spent == 15_000


async def test_batch_report_counts_new_and_duplicate_events(
    client: Any, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=50)
    lease_id = (await open_lease(client, agent, 5))["lease_id"]
    reports = [usage(None, 0.25, f"b-{i}") for i in range(4)] + [usage(None, 0.25, "b-0")]
    first = await client.post(
        "/api/v1/budget/report",
        headers=agent.headers,
        json={"lease_id": lease_id, "reports": reports},
    )
    assert first.status_code == 200, first.text
    assert first.json() == {
        "accepted": 4,
        "duplicates": 1,
        "lease_spent": 1.0,
        "budget_remaining": 45.0,
        "budget_limit": 50.0,
    }
    second = await client.post(
        "/api/v1/budget/report",
        headers=agent.headers,
        json={"lease_id": lease_id, "reports": reports},
    )
    assert second.json()["accepted"] == 0
    assert second.json()["duplicates"] == 5
    state = await assert_ledger_invariants(pool, agent.id)
    assert state.spent == 1_000_000


async def test_grants_are_partial_then_refused_and_overdraw_is_charged_and_visible(
    client: Any, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=12)
    first = await client.post(
        "/api/v1/budget/handshake", headers=agent.headers, json={"requested_budget": 10}
    )
    second = await client.post(
        "/api/v1/budget/handshake", headers=agent.headers, json={"requested_budget": 10}
    )
    assert second.json()["budget_granted"] == 2.0  # partial
    refused = await client.post(
        "/api/v1/budget/handshake", headers=agent.headers, json={"requested_budget": 1}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "BUDGET_EXHAUSTED"
    assert refused.json()["error"]["details"]["budget_remaining"] == 0.0
    # usage beyond the grant is never dropped: charged, and recorded as an overdraw
    lease_id = second.json()["lease_id"]
    response = await client.post("/api/v1/budget/report", headers=agent.headers, json=usage(lease_id, 3))
    assert response.status_code == 204
    state = await assert_ledger_invariants(pool, agent.id)
    assert (state.spent, state.overdrawn, state.available) == (3_000_000, 1_000_000, -1_000_000)
    refresh = await client.post(
        "/api/v1/budget/refresh",
        headers=agent.headers,
        json={"lease_id": first.json()["lease_id"], "requested_budget": 1},
    )
    assert refresh.status_code == 403


async def test_expired_leases_are_swept_and_their_unused_grant_flows_back(
    client: Any, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    from control_plane.budget.service import expire_leases

    agent = await make_agent(budget=20)
    lease_id = (await open_lease(client, agent, 8))["lease_id"]
    await client.post("/api/v1/budget/report", headers=agent.headers, json=usage(lease_id, 2))
    await pool.execute("UPDATE leases SET expires_at = now() - interval '1 second' WHERE id = $1", lease_id)
    assert await expire_leases(pool) >= 1
    assert await pool.fetchval("SELECT status FROM leases WHERE id = $1", lease_id) == "expired"
    state = await assert_ledger_invariants(pool, agent.id)
    assert (state.spent, state.outstanding, state.available) == (2_000_000, 0, 18_000_000)
    # a late report on the expired lease is still charged, once
    late = await client.post("/api/v1/budget/report", headers=agent.headers, json=usage(lease_id, 1))
    assert late.status_code == 204
    state = await assert_ledger_invariants(pool, agent.id)
    assert (state.spent, state.overdrawn) == (3_000_000, 1_000_000)
    refresh = await client.post(
        "/api/v1/budget/refresh",
        headers=agent.headers,
        json={"lease_id": lease_id, "requested_budget": 1},
    )
    assert refresh.status_code == 409


async def test_refresh_of_zero_is_a_heartbeat_that_extends_the_lease(
    client: Any, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=20)
    lease = await open_lease(client, agent, 20)
    await pool.execute(
        "UPDATE leases SET expires_at = now() + interval '1 minute' WHERE id = $1",
        lease["lease_id"],
    )
    beat = await client.post(
        "/api/v1/budget/refresh",
        headers=agent.headers,
        json={"lease_id": lease["lease_id"], "requested_budget": 0},
    )
    assert beat.status_code == 200, beat.text
    assert beat.json()["budget_granted"] == 0.0
    remaining_s = await pool.fetchval(
        "SELECT extract(epoch FROM expires_at - now()) FROM leases WHERE id = $1", lease["lease_id"]
    )
    assert remaining_s > 600
    await assert_ledger_invariants(pool, agent.id)


async def test_provider_key_and_aliases(client: Any, make_agent: MakeAgent) -> None:
    agent = await make_agent(budget=5)
    key = await client.post("/api/v1/agents/provider-key", headers=agent.headers)
    assert key.status_code == 200
    assert key.json()["api_key"] == FAKE_PROVIDER_KEY
    assert key.json()["provider"] == "openai"
    for path in ("/api/budget/handshake", "/api/v1/auth/handshake"):
        response = await client.post(path, headers=agent.headers, json={"requested_budget": 1})
        assert response.status_code == 200, (path, response.text)
    seed_style = await client.post(
        "/api/budget/handshake", json={"ic_token": agent.ic_token, "requested_budget": 1}
    )
    assert seed_style.status_code == 200


async def test_the_sweeper_loop_expires_leases_on_its_own(
    client: Any, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=10)
    lease_id = (await open_lease(client, agent, 4))["lease_id"]
    await pool.execute("UPDATE leases SET expires_at = now() - interval '1 second' WHERE id = $1", lease_id)

    async def expired() -> bool:
        return await pool.fetchval("SELECT status FROM leases WHERE id = $1", lease_id) == "expired"

    await sweep_until(pool, expired)
    assert await expired()
    state = await assert_ledger_invariants(pool, agent.id)
    assert (state.outstanding, state.available) == (0, 10_000_000)
