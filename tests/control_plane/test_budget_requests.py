"""Budget-change requests end to end on real PostgreSQL: the lifecycle, permissions, aliases,
lists, and races (in one process and across two) that must apply an approval exactly once."""

import asyncio
import json
from typing import Any

import asyncpg
import httpx
import pytest

from iron import ids
from tests.conftest import open_lease
from tests.control_plane.helpers import Person, assert_error, create_agent, make_person, usage
from tests.ledger_checks import assert_ledger_invariants

BASE = "/api/v1/budget-requests"
ALIAS = "/api/v1/budget/requests"
WHY = "Customer demo next week needs about 500 more calls."


async def file_request(
    client: httpx.AsyncClient, who: Person, agent_id: str, requested: float, base: str = BASE
) -> dict[str, Any]:
    response = await client.post(
        base,
        headers=who.headers,
        json={"agent_id": agent_id, "requested_budget": requested, "justification": WHY},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def budget_of(pool: asyncpg.Pool, agent_id: str) -> int:
    budget: int = await pool.fetchval("SELECT budget_micros FROM agents WHERE id = $1", agent_id)
    return budget


async def audit_rows(pool: asyncpg.Pool, request_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM audit_logs WHERE resource_type = 'budget_request' AND resource_id = $1"
        " ORDER BY timestamp, id",
        request_id,
    )


@pytest.fixture
async def admin(pool: asyncpg.Pool, client: httpx.AsyncClient) -> Person:
    return await make_person(client, pool, "admin")


@pytest.fixture
async def dev(pool: asyncpg.Pool, client: httpx.AsyncClient) -> Person:
    return await make_person(client, pool, "user")


async def test_lifecycle_create_get_approve_raises_the_budget_with_live_figures(
    client: httpx.AsyncClient, pool: asyncpg.Pool, provider_id: str, admin: Person, dev: Person
) -> None:
    agent = await create_agent(client, dev.headers, 10, providers=[provider_id])
    lease = await open_lease(client, agent, 4)
    reported = await client.post(
        "/api/v1/budget/report", headers=agent.headers, json=usage(lease["lease_id"], 1.5)
    )
    assert reported.status_code == 204, reported.text

    created = await file_request(client, dev, agent.id, 25)
    assert ids.is_valid(ids.BUDGET_REQUEST, created["id"])
    assert created["status"] == "pending"
    assert (created["current_budget"], created["requested_budget"]) == (10.0, 25.0)
    assert created["agent_id"] == agent.id
    assert created["requester_id"] == dev.id
    assert created["justification"] == WHY
    assert created["created_at"].endswith("Z")
    assert "approved_budget" not in created
    assert "reviewed_by" not in created

    fetched = (await client.get(f"{BASE}/{created['id']}", headers=dev.headers)).json()
    assert fetched["agent"] == {
        "status": "active",
        "budget": 10.0,
        "spent": 1.5,
        "outstanding": 2.5,
        "remaining": 6.0,
    }

    approved = await client.put(
        f"{BASE}/{created['id']}/approve", headers=admin.headers, json={"review_notes": "Go ahead."}
    )
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["status"] == "approved"
    assert body["approved_budget"] == 25.0
    assert body["reviewed_by"] == admin.id
    assert body["review_notes"] == "Go ahead."
    assert body["reviewed_at"].endswith("Z")
    assert body["current_budget"] == 10.0  # the snapshot the request was filed against
    assert body["agent"]["budget"] == 25.0
    assert body["agent"]["remaining"] == 21.0

    state = await assert_ledger_invariants(pool, agent.id)
    assert (state.budget, state.spent, state.outstanding) == (25_000_000, 1_500_000, 2_500_000)
    history = await pool.fetch(
        "SELECT old_micros, new_micros, changed_by, reason FROM budget_changes"
        " WHERE agent_id = $1 ORDER BY id",
        agent.id,
    )
    assert [(h["old_micros"], h["new_micros"]) for h in history[1:]] == [(10_000_000, 25_000_000)]
    assert history[-1]["changed_by"] == admin.id
    assert created["id"] in history[-1]["reason"]

    # one audit entry per mutation: created, then approved with the budget's before and after
    entries = await audit_rows(pool, created["id"])
    assert [e["operation"] for e in entries] == ["BUDGET_REQUEST_CREATED", "BUDGET_REQUEST_APPROVED"]
    approval = entries[1]
    assert approval["user_id"] == admin.id
    assert approval["user_role"] == "admin"
    assert approval["request_id"] == approved.headers["x-request-id"]
    assert json.loads(approval["changes"]) == {
        "before": {"status": "pending", "budget": 10.0},
        "after": {"status": "approved", "budget": 25.0},
    }
    assert json.loads(approval["metadata"])["approved_budget"] == 25.0
    same_request = await pool.fetchval(
        "SELECT count(*) FROM audit_logs WHERE request_id = $1", approved.headers["x-request-id"]
    )
    assert same_request == 1  # no separate BUDGET_UPDATED entry

    # terminal states are final
    for method, path, payload in (
        ("PUT", f"{BASE}/{created['id']}/approve", {}),
        ("PUT", f"{BASE}/{created['id']}/reject", {"review_notes": "Too late."}),
        ("DELETE", f"{BASE}/{created['id']}", None),
    ):
        again = await client.request(method, path, headers=admin.headers, json=payload)
        assert assert_error(again, 409, "RESOURCE_CONFLICT")["details"]["status"] == "approved"
    assert await budget_of(pool, agent.id) == 25_000_000
    assert len(await audit_rows(pool, created["id"])) == 2


async def test_approve_with_a_chosen_amount_and_only_upwards(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person, dev: Person
) -> None:
    agent = await create_agent(client, dev.headers, 10)
    partial = await file_request(client, dev, agent.id, 50)
    approved = await client.put(
        f"{BASE}/{partial['id']}/approve", headers=admin.headers, json={"approved_budget": 30}
    )
    assert approved.status_code == 200, approved.text
    assert (approved.json()["approved_budget"], approved.json()["requested_budget"]) == (30.0, 50.0)
    assert await budget_of(pool, agent.id) == 30_000_000

    # the budget moved past this one's request meanwhile: approving it would lower the budget
    stale = await file_request(client, dev, agent.id, 40)
    await pool.execute("UPDATE agents SET budget_micros = 45000000 WHERE id = $1", agent.id)
    refused = await client.put(f"{BASE}/{stale['id']}/approve", headers=admin.headers)
    assert "approved_budget" in assert_error(refused, 400, "VALIDATION_ERROR")["fields"]
    lower = await client.put(
        f"{BASE}/{stale['id']}/approve", headers=admin.headers, json={"approved_budget": 45}
    )
    assert "approved_budget" in assert_error(lower, 400, "VALIDATION_ERROR")["fields"]
    assert await budget_of(pool, agent.id) == 45_000_000
    still = (await client.get(f"{BASE}/{stale['id']}", headers=dev.headers)).json()
    assert still["status"] == "pending"
    bad = await client.put(
        f"{BASE}/{stale['id']}/approve",
        headers=admin.headers,
        json={"approved_budget": -1, "review_notes": "x" * 1001},
    )
    assert set(assert_error(bad, 400, "VALIDATION_ERROR")["fields"]) == {"approved_budget", "review_notes"}
    assert [e["operation"] for e in await audit_rows(pool, stale["id"])] == ["BUDGET_REQUEST_CREATED"]


async def test_reject_needs_notes_and_leaves_the_budget(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person, dev: Person
) -> None:
    agent = await create_agent(client, dev.headers, 10)
    created = await file_request(client, dev, agent.id, 20)
    path = f"{BASE}/{created['id']}/reject"
    for payload in ({}, {"review_notes": ""}, {"review_notes": "   "}, {"review_notes": "x" * 1001}):
        refused = await client.put(path, headers=admin.headers, json=payload)
        assert "review_notes" in assert_error(refused, 400, "VALIDATION_ERROR")["fields"], payload
    no_body = await client.put(path, headers=admin.headers)
    assert_error(no_body, 400, "VALIDATION_ERROR")
    by_user = await client.put(path, headers=dev.headers, json={"review_notes": "My own call."})
    assert_error(by_user, 403, "PERMISSION_DENIED")

    rejected = await client.put(path, headers=admin.headers, json={"review_notes": "Q1 is fully allocated."})
    assert rejected.status_code == 200, rejected.text
    body = rejected.json()
    assert (body["status"], body["review_notes"], body["reviewed_by"]) == (
        "rejected",
        "Q1 is fully allocated.",
        admin.id,
    )
    assert "approved_budget" not in body
    assert await budget_of(pool, agent.id) == 10_000_000
    assert_error(
        await client.put(f"{BASE}/{created['id']}/approve", headers=admin.headers), 409, "RESOURCE_CONFLICT"
    )
    assert_error(
        await client.delete(f"{BASE}/{created['id']}", headers=dev.headers), 409, "RESOURCE_CONFLICT"
    )
    entries = await audit_rows(pool, created["id"])
    assert [e["operation"] for e in entries] == ["BUDGET_REQUEST_CREATED", "BUDGET_REQUEST_REJECTED"]
    assert "Q1 is fully allocated." in entries[1]["metadata"]


async def test_cancel_by_the_requester_or_an_admin_only(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person, dev: Person
) -> None:
    agent = await create_agent(client, dev.headers, 10)
    mine = await file_request(client, dev, agent.id, 20)
    stranger = await make_person(client, pool, "user")
    # someone else's request does not exist for them
    assert_error(
        await client.delete(f"{BASE}/{mine['id']}", headers=stranger.headers), 404, "RESOURCE_NOT_FOUND"
    )
    assert_error(
        await client.get(f"{BASE}/{mine['id']}", headers=stranger.headers), 404, "RESOURCE_NOT_FOUND"
    )
    cancelled = await client.delete(f"{BASE}/{mine['id']}", headers=dev.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert_error(await client.delete(f"{BASE}/{mine['id']}", headers=dev.headers), 409, "RESOURCE_CONFLICT")
    assert_error(
        await client.put(f"{BASE}/{mine['id']}/approve", headers=admin.headers), 409, "RESOURCE_CONFLICT"
    )
    assert await budget_of(pool, agent.id) == 10_000_000

    other = await file_request(client, dev, agent.id, 30)
    by_admin = await client.delete(f"{BASE}/{other['id']}", headers=admin.headers)
    assert by_admin.status_code == 200, by_admin.text
    entries = await audit_rows(pool, other["id"])
    assert [(e["operation"], e["user_id"]) for e in entries] == [
        ("BUDGET_REQUEST_CREATED", dev.id),
        ("BUDGET_REQUEST_CANCELLED", admin.id),
    ]
    assert [e["operation"] for e in await audit_rows(pool, mine["id"])][-1] == "BUDGET_REQUEST_CANCELLED"


async def test_create_validation_and_permissions(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person, dev: Person
) -> None:
    agent = await create_agent(client, dev.headers, 10)

    async def post(who: Person, payload: dict[str, Any]) -> httpx.Response:
        return await client.post(BASE, headers=who.headers, json=payload)

    everything_wrong = await post(
        dev, {"agent_id": "agent-1", "requested_budget": 0, "justification": "short"}
    )
    assert set(assert_error(everything_wrong, 400, "VALIDATION_ERROR")["fields"]) == {
        "agent_id",
        "requested_budget",
        "justification",
    }
    missing = await post(dev, {})
    assert set(assert_error(missing, 400, "VALIDATION_ERROR")["fields"]) == {
        "agent_id",
        "requested_budget",
        "justification",
    }
    for justification in ("x" * 19, "x" * 501, " " * 25):
        refused = await post(
            dev, {"agent_id": agent.id, "requested_budget": 20, "justification": justification}
        )
        assert set(assert_error(refused, 400, "VALIDATION_ERROR")["fields"]) == {"justification"}
    assert (
        await post(dev, {"agent_id": agent.id, "requested_budget": 20, "justification": "x" * 20})
    ).status_code == 201
    assert (
        await post(dev, {"agent_id": agent.id, "requested_budget": 20, "justification": "x" * 500})
    ).status_code == 201
    for not_more in (10, 9.99, 5):
        refused = await post(dev, {"agent_id": agent.id, "requested_budget": not_more, "justification": WHY})
        assert set(assert_error(refused, 400, "VALIDATION_ERROR")["fields"]) == {"requested_budget"}

    stranger = await make_person(client, pool, "user")
    theirs = await post(stranger, {"agent_id": agent.id, "requested_budget": 20, "justification": WHY})
    assert_error(theirs, 404, "RESOURCE_NOT_FOUND")
    unknown = await post(
        dev, {"agent_id": ids.new_id(ids.AGENT), "requested_budget": 20, "justification": WHY}
    )
    assert_error(unknown, 404, "RESOURCE_NOT_FOUND")
    viewer = await make_person(client, pool, "viewer")
    assert_error(
        await post(viewer, {"agent_id": agent.id, "requested_budget": 20, "justification": WHY}),
        403,
        "PERMISSION_DENIED",
    )
    assert_error(await client.post(BASE, json={}), 401, "AUTH_INVALID_TOKEN")
    # an admin may file for any agent (admins usually edit budgets directly)
    by_admin = await file_request(client, admin, agent.id, 15)
    assert by_admin["requester_id"] == admin.id
    count = await pool.fetchval("SELECT count(*) FROM budget_requests WHERE agent_id = $1", agent.id)
    assert count == 3


async def test_path_ids_and_review_rights(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person, dev: Person
) -> None:
    agent = await create_agent(client, dev.headers, 10)
    created = await file_request(client, dev, agent.id, 20)
    for path in (f"{BASE}/breq-123", f"{BASE}/{agent.id}", f"{ALIAS}/breq_nope"):
        error = assert_error(await client.get(path, headers=admin.headers), 400, "VALIDATION_ERROR")
        assert set(error["fields"]) == {"budget_request_id"}
    unknown = ids.new_id(ids.BUDGET_REQUEST)
    assert_error(await client.get(f"{BASE}/{unknown}", headers=admin.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        await client.put(f"{BASE}/{unknown}/approve", headers=admin.headers), 404, "RESOURCE_NOT_FOUND"
    )
    assert_error(await client.delete(f"{BASE}/{unknown}", headers=dev.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        await client.put(f"{BASE}/{created['id']}/approve", headers=dev.headers), 403, "PERMISSION_DENIED"
    )
    viewer = await make_person(client, pool, "viewer")
    assert_error(
        await client.put(f"{BASE}/{created['id']}/approve", headers=viewer.headers), 403, "PERMISSION_DENIED"
    )
    # an admin sees everyone's, its requester its own
    assert (await client.get(f"{BASE}/{created['id']}", headers=admin.headers)).status_code == 200
    assert (await client.get(f"{BASE}/{created['id']}", headers=dev.headers)).status_code == 200
    assert await budget_of(pool, agent.id) == 10_000_000
    assert len(await audit_rows(pool, created["id"])) == 1


async def test_aliases_including_patch_reviews(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person, dev: Person
) -> None:
    agent = await create_agent(client, dev.headers, 10)
    first = await file_request(client, dev, agent.id, 20, base=ALIAS)
    assert (await client.get(f"{ALIAS}/{first['id']}", headers=dev.headers)).json()["status"] == "pending"
    listed = (await client.get(f"{ALIAS}?agent_id={agent.id}", headers=dev.headers)).json()
    assert [r["id"] for r in listed["data"]] == [first["id"]]
    # canonical paths take PUT, the seed's aliases PATCH
    assert (await client.patch(f"{BASE}/{first['id']}/approve", headers=admin.headers)).status_code == 405
    assert (await client.put(f"{ALIAS}/{first['id']}/approve", headers=admin.headers)).status_code == 405
    approved = await client.patch(f"{ALIAS}/{first['id']}/approve", headers=admin.headers, json={})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert await budget_of(pool, agent.id) == 20_000_000

    second = await file_request(client, dev, agent.id, 30)
    rejected = await client.patch(
        f"{ALIAS}/{second['id']}/reject", headers=admin.headers, json={"review_notes": "Not now."}
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"

    third = await file_request(client, dev, agent.id, 40)
    cancelled = await client.delete(f"{ALIAS}/{third['id']}", headers=dev.headers)
    assert cancelled.json()["status"] == "cancelled"
    assert await budget_of(pool, agent.id) == 20_000_000


async def test_list_scope_filters_sort_and_pages(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person, dev: Person
) -> None:
    agent = await create_agent(client, dev.headers, 10)
    other_agent = await create_agent(client, dev.headers, 10)
    made = [await file_request(client, dev, agent.id, amount) for amount in (30, 20, 40)]
    on_other = await file_request(client, dev, other_agent.id, 15)
    await client.delete(f"{BASE}/{made[1]['id']}", headers=dev.headers)
    stranger = await make_person(client, pool, "user")
    theirs = await file_request(client, stranger, (await create_agent(client, stranger.headers, 1)).id, 2)

    mine = (await client.get(BASE, headers=dev.headers)).json()
    assert [r["id"] for r in mine["data"]] == [on_other["id"], made[2]["id"], made[1]["id"], made[0]["id"]]
    assert mine["pagination"] == {"page": 1, "per_page": 50, "total": 4, "total_pages": 1}
    assert [r["id"] for r in (await client.get(BASE, headers=stranger.headers)).json()["data"]] == [
        theirs["id"]
    ]

    by_amount = (
        await client.get(f"{BASE}?agent_id={agent.id}&sort=-requested_budget", headers=dev.headers)
    ).json()
    assert [r["requested_budget"] for r in by_amount["data"]] == [40.0, 30.0, 20.0]
    pending = (
        await client.get(f"{BASE}?agent_id={agent.id}&status=pending&sort=created_at", headers=dev.headers)
    ).json()
    assert [r["id"] for r in pending["data"]] == [made[0]["id"], made[2]["id"]]
    page2 = (await client.get(f"{BASE}?per_page=3&page=2", headers=dev.headers)).json()
    assert [r["id"] for r in page2["data"]] == [made[0]["id"]]
    assert page2["pagination"] == {"page": 2, "per_page": 3, "total": 4, "total_pages": 2}
    past = (await client.get(f"{BASE}?page=9", headers=dev.headers)).json()
    assert (past["data"], past["pagination"]["total"]) == ([], 4)

    # admins see every requester's; another's agent filter gives a user nothing
    everyone = (await client.get(f"{BASE}?agent_id={agent.id}", headers=admin.headers)).json()
    assert everyone["pagination"]["total"] == 3
    assert (await client.get(f"{BASE}?agent_id={agent.id}", headers=stranger.headers)).json()["data"] == []

    bad = await client.get(f"{BASE}?status=open&agent_id=nope&sort=justification&page=0", headers=dev.headers)
    assert set(assert_error(bad, 400, "VALIDATION_ERROR")["fields"]) == {"status", "agent_id", "sort", "page"}


async def _race(
    pool: asyncpg.Pool, admin: Person, dev: Person, client: httpx.AsyncClient, send: Any, rounds: int
) -> None:
    """``send(request_id)`` fires two approvals at once; exactly one applies, every time."""
    agent = await create_agent(client, dev.headers, 10)
    for n in range(rounds):
        expected = 20_000_000 + n * 10_000_000
        created = await file_request(client, dev, agent.id, expected / 1_000_000)
        responses = await send(created["id"])
        assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
        loser = next(r for r in responses if r.status_code == 409)
        assert loser.json()["error"]["code"] == "RESOURCE_CONFLICT"
        assert await budget_of(pool, agent.id) == expected
        operations = [e["operation"] for e in await audit_rows(pool, created["id"])]
        assert operations == ["BUDGET_REQUEST_CREATED", "BUDGET_REQUEST_APPROVED"]
    changes = await pool.fetchval(
        "SELECT count(*) FROM budget_changes WHERE agent_id = $1 AND reason LIKE 'Budget request %'", agent.id
    )
    assert changes == rounds
    await assert_ledger_invariants(pool, agent.id)


async def test_two_concurrent_approvals_apply_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person, dev: Person
) -> None:
    second_admin = await make_person(client, pool, "admin")

    async def send(request_id: str) -> list[httpx.Response]:
        return list(
            await asyncio.gather(
                client.put(f"{BASE}/{request_id}/approve", headers=admin.headers),
                client.patch(f"{ALIAS}/{request_id}/approve", headers=second_admin.headers, json={}),
            )
        )

    await _race(pool, admin, dev, client, send, rounds=8)


@pytest.mark.slow
async def test_two_approvals_across_two_processes_apply_once(
    control_plane_processes: list[str],
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    admin: Person,
    dev: Person,
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:

        async def send(request_id: str) -> list[httpx.Response]:
            return list(
                await asyncio.gather(
                    *(
                        http.put(f"{url}{BASE}/{request_id}/approve", headers=admin.headers)
                        for url in control_plane_processes
                    )
                )
            )

        await _race(pool, admin, dev, client, send, rounds=8)


async def _approve_or_cancel(
    client: httpx.AsyncClient, pool: asyncpg.Pool, dev: Person, send: Any, rounds: int
) -> set[str]:
    """Each round an approval races a cancel: one wins, the other is 409, and state agrees."""
    agent = await create_agent(client, dev.headers, 10)
    winners: set[str] = set()
    budget = 10_000_000
    for n in range(rounds):
        created = await file_request(client, dev, agent.id, 20 + n * 10)
        approve, cancel = await send(created["id"])
        assert sorted((approve.status_code, cancel.status_code)) == [200, 409], (approve.text, cancel.text)
        status = (await client.get(f"{BASE}/{created['id']}", headers=dev.headers)).json()["status"]
        winner = "approved" if approve.status_code == 200 else "cancelled"
        assert status == winner
        winners.add(winner)
        if winner == "approved":
            budget = (20 + n * 10) * 1_000_000
        assert await budget_of(pool, agent.id) == budget
        operations = [e["operation"] for e in await audit_rows(pool, created["id"])]
        assert operations == ["BUDGET_REQUEST_CREATED", f"BUDGET_REQUEST_{winner.upper()}"]
    await assert_ledger_invariants(pool, agent.id)
    return winners


async def test_an_approval_racing_a_cancel_one_wins(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person, dev: Person
) -> None:
    async def send(request_id: str) -> list[httpx.Response]:
        return list(
            await asyncio.gather(
                client.put(f"{BASE}/{request_id}/approve", headers=admin.headers),
                client.delete(f"{BASE}/{request_id}", headers=dev.headers),
            )
        )

    await _approve_or_cancel(client, pool, dev, send, rounds=8)


@pytest.mark.slow
async def test_an_approval_racing_a_cancel_across_processes(
    control_plane_processes: list[str],
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    admin: Person,
    dev: Person,
) -> None:
    first, second = control_plane_processes
    async with httpx.AsyncClient(timeout=30) as http:

        async def send(request_id: str) -> list[httpx.Response]:
            return list(
                await asyncio.gather(
                    http.put(f"{first}{BASE}/{request_id}/approve", headers=admin.headers),
                    http.delete(f"{second}{BASE}/{request_id}", headers=dev.headers),
                )
            )

        await _approve_or_cancel(client, pool, dev, send, rounds=8)
