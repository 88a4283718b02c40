"""Races across two real control-plane processes sharing one database."""

import asyncio
import secrets
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import MakeAgent
from tests.control_plane.helpers import usage
from tests.ledger_checks import assert_ledger_invariants

pytestmark = pytest.mark.slow


async def test_200_concurrent_handshakes_grant_exactly_the_budget(
    control_plane_processes: list[str], pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=50)
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    f"{control_plane_processes[n % 2]}/api/v1/budget/handshake",
                    headers=agent.headers,
                    json={"requested_budget": 1},
                )
                for n in range(200)
            )
        )
    outcomes = Counter(
        (r.status_code, r.json()["error"]["code"] if r.status_code != 200 else "") for r in responses
    )
    granted = [r.json()["budget_granted"] for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 403]
    assert set(outcomes) <= {(200, ""), (403, "BUDGET_EXHAUSTED")}, outcomes
    assert len(granted) == 50
    assert sum(granted) == 50.0
    assert len(refused) == 150
    assert all(r.json()["error"]["code"] == "BUDGET_EXHAUSTED" for r in refused)
    state = await assert_ledger_invariants(pool, agent.id)
    assert (state.outstanding, state.available) == (50_000_000, 0)


async def test_concurrent_overlapping_batches_never_double_count(
    control_plane_processes: list[str], pool: asyncpg.Pool, make_agent: MakeAgent, client: Any
) -> None:
    agent = await make_agent(budget=100)
    lease_id = (
        await client.post("/api/v1/budget/handshake", headers=agent.headers, json={"requested_budget": 40})
    ).json()["lease_id"]
    # 30 distinct calls of $0.37; 24 batches each carry an overlapping window of 10 of them
    calls = [usage(None, 0.37, f"race-{secrets.token_hex(4)}-{n}") for n in range(30)]
    batches = [{"lease_id": lease_id, "reports": calls[(k % 21) : (k % 21) + 10]} for k in range(24)]
    async with httpx.AsyncClient(timeout=30) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    f"{control_plane_processes[n % 2]}/api/v1/budget/report",
                    headers=agent.headers,
                    json=batch,
                )
                for n, batch in enumerate(batches)
            )
        )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert sum(r.json()["accepted"] for r in responses) == 30
    assert sum(r.json()["duplicates"] for r in responses) == 24 * 10 - 30
    state = await assert_ledger_invariants(pool, agent.id)
    assert state.spent == 30 * 370_000


async def test_reports_racing_a_return_and_expiry_keep_the_ledger_exact(
    control_plane_processes: list[str], pool: asyncpg.Pool, make_agent: MakeAgent, client: Any
) -> None:
    from control_plane.budget.service import expire_leases

    agent = await make_agent(budget=30)
    leases = [
        (
            await client.post(
                "/api/v1/budget/handshake", headers=agent.headers, json={"requested_budget": 10}
            )
        ).json()["lease_id"]
        for _ in range(3)
    ]
    await pool.execute("UPDATE leases SET expires_at = now() WHERE id = $1", leases[2])

    async def report(n: int) -> httpx.Response:
        url = f"{control_plane_processes[n % 2]}/api/v1/budget/report"
        return await http.post(url, headers=agent.headers, json=usage(leases[n % 3], 0.5, f"rr-{n}"))

    async with httpx.AsyncClient(timeout=30) as http:
        results = await asyncio.gather(
            *(report(n) for n in range(60)),
            http.post(
                f"{control_plane_processes[0]}/api/v1/budget/return",
                headers=agent.headers,
                json={"lease_id": leases[0]},
            ),
            expire_leases(pool),
        )
    assert all(r.status_code == 204 for r in results[:60])
    state = await assert_ledger_invariants(pool, agent.id)
    assert state.spent == 60 * 500_000
