"""Agents beyond create/list/get: update, delete, providers, status; by role, on real PostgreSQL."""

import asyncio
import secrets
from typing import Any

import asyncpg
import httpx
import pytest

from iron import ids
from tests.conftest import open_lease
from tests.control_plane.helpers import (
    Roles,
    assert_error,
    assert_one_audit,
    assert_refused,
    bearer,
    create_agent,
    create_provider,
    demote_to_viewer,
    fingerprint,
    make_person,
    make_roles,
    usage,
)
from tests.ledger_checks import assert_ledger_invariants

# --- list (the contract of every list: test_list_contract.py) --------------------------------------


async def test_the_list_shows_users_and_viewers_their_own_agents_and_admins_everyones(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], roles: Roles
) -> None:
    tag = secrets.token_hex(3)
    mine = await create_agent(client, roles.owner.headers, name=f"{tag}-mine")
    theirs = await create_agent(client, roles.other.headers, name=f"{tag}-theirs")

    async def listed(headers: dict[str, str]) -> set[str]:
        response = await client.get(f"/api/v1/agents?search={tag}", headers=headers)
        assert response.status_code == 200, response.text
        return {agent["id"] for agent in response.json()["data"]}

    assert await listed(roles.owner.headers) == {mine.id}
    assert await listed(roles.other.headers) == {theirs.id}
    assert await listed(admin_headers) == {mine.id, theirs.id}
    assert await listed(roles.viewer.headers) == set()
    viewer = await make_person(client, pool, "user")
    kept = await create_agent(client, viewer.headers, name=f"{tag}-kept")
    await demote_to_viewer(pool, viewer)
    assert await listed(viewer.headers) == {kept.id}


# --- update ---------------------------------------------------------------------------------------


async def test_the_owner_updates_name_description_tags_and_project_with_one_audit_entry(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], roles: Roles
) -> None:
    project = await client.post(
        "/api/v1/projects", headers=admin_headers, json={"name": f"proj-{secrets.token_hex(4)}"}
    )
    assert project.status_code == 201, project.text
    agent = await create_agent(client, roles.owner.headers, description="old", tags=["a"])
    path = f"/api/v1/agents/{agent.id}"
    before = (await client.get(path, headers=roles.owner.headers)).json()
    change = {"name": "renamed", "tags": ["x", "y"], "project_id": project.json()["id"]}
    response = await client.put(path, headers=roles.owner.headers, json=change)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in change} == change
    assert body["description"] == "old"  # absent fields stay
    assert body["budget"] == before["budget"] == 100.0
    assert body["updated_at"] > before["updated_at"]
    assert (await client.get(path, headers=roles.owner.headers)).json() == body
    entry = await assert_one_audit(pool, response, "AGENT_UPDATED", agent.id, agent.ic_token)
    assert agent.ic_token not in response.text
    assert '"renamed"' in entry["changes"]
    assert before["name"] in entry["changes"]
    assert entry["user_id"] == roles.owner.id
    # null clears a nullable field; an admin may update anyone's agent
    cleared = await client.put(path, headers=admin_headers, json={"description": None, "project_id": None})
    assert cleared.status_code == 200, cleared.text
    assert "description" not in cleared.json()
    assert "project_id" not in cleared.json()
    await assert_one_audit(pool, cleared, "AGENT_UPDATED", agent.id)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        pytest.param(
            {"name": "", "tags": [""], "project_id": "proj_x"}, {"name", "tags[0]", "project_id"}, id="3"
        ),
        pytest.param({"budget": 1000}, {"body"}, id="budget-is-not-here"),
        pytest.param({}, {"body"}, id="empty"),
        pytest.param({"name": None}, {"name"}, id="null-name"),
        pytest.param({"project_id": ids.new_id(ids.PROJECT)}, {"project_id"}, id="unknown-project"),
        pytest.param(b"{bad", {"body"}, id="malformed"),
    ],
)
async def test_a_bad_update_is_400_naming_every_field_and_changes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, roles: Roles, body: Any, fields: set[str]
) -> None:
    agent = await create_agent(client, roles.owner.headers)
    before = await fingerprint(pool)
    content = body if isinstance(body, bytes) else None
    response = await client.put(
        f"/api/v1/agents/{agent.id}",
        headers=roles.owner.headers,
        content=content,
        json=None if content else body,
    )
    error = await assert_refused(pool, response, 400, "VALIDATION_ERROR")
    assert set(error["fields"]) == fields, error
    assert await fingerprint(pool) == before


async def test_roles_on_agent_changes(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], provider_id: str
) -> None:
    """Another user and a viewer get 404 on someone's agent; a viewer owning one reads it, changes nothing."""
    roles = await make_roles(client, pool)
    agent = await create_agent(client, roles.owner.headers)
    path = f"/api/v1/agents/{agent.id}"
    changes: list[tuple[str, str, Any]] = [
        ("PUT", path, {"name": "stolen"}),
        ("DELETE", path, None),
        ("PUT", f"{path}/providers", {"providers": [provider_id]}),
        ("DELETE", f"{path}/providers/{provider_id}", None),
    ]
    reads = [path, f"{path}/providers", f"{path}/status"]
    await demote_to_viewer(pool, roles.owner)
    before = await fingerprint(pool)
    for stranger in (roles.other, roles.viewer):
        for method, url, body in changes:
            response = await client.request(method, url, headers=stranger.headers, json=body)
            await assert_refused(pool, response, 404, "RESOURCE_NOT_FOUND")
        for url in reads:
            assert_error(await client.get(url, headers=stranger.headers), 404, "RESOURCE_NOT_FOUND")
    await demote_to_viewer(pool, roles.owner)
    for url in reads:
        assert (await client.get(url, headers=roles.owner.headers)).status_code == 200, url
    for method, url, body in changes:
        response = await client.request(method, url, headers=roles.owner.headers, json=body)
        await assert_refused(pool, response, 403, "PERMISSION_DENIED")
    assert await fingerprint(pool) == before
    # control: the same changes by an admin go through
    for method, url, body in (changes[0], changes[2], changes[3], changes[1]):
        response = await client.request(method, url, headers=admin_headers, json=body)
        assert response.status_code in (200, 204), (method, url, response.text)


async def test_only_an_admin_gives_an_agent_to_another_live_user(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], roles: Roles
) -> None:
    agent = await create_agent(client, roles.owner.headers)
    path = f"/api/v1/agents/{agent.id}"
    before = await fingerprint(pool)
    response = await client.put(path, headers=roles.owner.headers, json={"owner_id": roles.other.id})
    await assert_refused(pool, response, 403, "PERMISSION_DENIED")
    for unknown in (ids.new_id(ids.USER), "not-a-user-id"):
        response = await client.put(path, headers=admin_headers, json={"owner_id": unknown})
        error = await assert_refused(pool, response, 400, "VALIDATION_ERROR")
        assert set(error["fields"]) == {"owner_id"}, error
    assert await fingerprint(pool) == before

    response = await client.put(path, headers=admin_headers, json={"owner_id": roles.other.id})
    assert response.status_code == 200, response.text
    assert response.json()["owner_id"] == roles.other.id
    entry = await assert_one_audit(pool, response, "AGENT_UPDATED", agent.id)
    assert roles.owner.id in entry["changes"]
    assert roles.other.id in entry["changes"]
    assert (await client.get(path, headers=roles.other.headers)).status_code == 200
    assert_error(await client.get(path, headers=roles.owner.headers), 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "suffix", "body", "field"),
    [
        pytest.param("PUT", "", {"name": "n"}, "agent_id", id="update"),
        pytest.param("DELETE", "", None, "agent_id", id="delete"),
        pytest.param("GET", "/providers", None, "agent_id", id="providers"),
        pytest.param("PUT", "/providers", {"providers": []}, "agent_id", id="assign"),
        pytest.param("GET", "/status", None, "agent_id", id="status"),
    ],
)
async def test_malformed_agent_ids_are_400_and_unknown_ones_404(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    admin_headers: dict[str, str],
    method: str,
    suffix: str,
    body: Any,
    field: str,
) -> None:
    malformed = await client.request(
        method, f"/api/v1/agents/agent_1{suffix}", headers=admin_headers, json=body
    )
    error = await assert_refused(pool, malformed, 400, "VALIDATION_ERROR")
    assert set(error["fields"]) == {field}
    missing = await client.request(
        method, f"/api/v1/agents/{ids.new_id(ids.AGENT)}{suffix}", headers=admin_headers, json=body
    )
    await assert_refused(pool, missing, 404, "RESOURCE_NOT_FOUND")


# --- delete ---------------------------------------------------------------------------------------


async def test_delete_closes_leases_returns_outstanding_revokes_the_token_and_cancels_requests(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    admin_headers: dict[str, str],
    roles: Roles,
    provider_id: str,
) -> None:
    agent = await create_agent(client, roles.owner.headers, budget=50, providers=[provider_id])
    first = await open_lease(client, agent, 10)
    second = await open_lease(client, agent, 5)
    reported = await client.post(
        "/api/v1/budget/report", headers=agent.headers, json=usage(first["lease_id"], 3.25)
    )
    assert reported.status_code == 204, reported.text
    request_id = ids.new_id(ids.BUDGET_REQUEST)
    await pool.execute(
        "INSERT INTO budget_requests (id, agent_id, requester_id, current_budget_micros,"
        " requested_budget_micros, justification) VALUES ($1, $2, $3, 50000000, 80000000, $4)",
        request_id,
        agent.id,
        roles.owner.id,
        "Need more budget for the nightly evaluation run",
    )
    state = await assert_ledger_invariants(pool, agent.id)
    assert state.outstanding == 11_750_000

    response = await client.delete(f"/api/v1/agents/{agent.id}", headers=roles.owner.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": agent.id,
        "status": "deleted",
        "ic_token_revoked": True,
        "leases_closed": 2,
        "returned": 11.75,
        "budget_requests_cancelled": [request_id],
    }
    entry = await assert_one_audit(pool, response, "AGENT_DELETED", agent.id, agent.ic_token)
    assert request_id in entry["metadata"]
    # the ledger: nothing outstanding, what was spent stays spent
    state = await assert_ledger_invariants(pool, agent.id)
    assert (state.spent, state.outstanding, state.budget) == (3_250_000, 0, 50_000_000)
    statuses = await pool.fetch(
        "SELECT status FROM leases WHERE id = ANY($1::text[])", [first["lease_id"], second["lease_id"]]
    )
    assert [row["status"] for row in statuses] == ["closed", "closed"]
    assert await pool.fetchval("SELECT status FROM budget_requests WHERE id = $1", request_id) == "cancelled"
    # the token is dead at once, the agent gone from every read
    refused = await client.post(
        "/api/v1/budget/handshake", headers=agent.headers, json={"requested_budget": 1}
    )
    assert_error(refused, 401, "AUTH_INVALID_TOKEN")
    for headers in (roles.owner.headers, admin_headers):
        for suffix in ("", "/status", "/providers", "/ic-token"):
            got = await client.get(f"/api/v1/agents/{agent.id}{suffix}", headers=headers)
            assert_error(got, 404, "RESOURCE_NOT_FOUND")
        listed = await client.get("/api/v1/agents?per_page=100", headers=headers)
        assert agent.id not in {a["id"] for a in listed.json()["data"]}
    again = await client.delete(f"/api/v1/agents/{agent.id}", headers=roles.owner.headers)
    await assert_refused(pool, again, 404, "RESOURCE_NOT_FOUND")


async def test_an_admin_deletes_anyones_agent_and_an_agent_without_leases_returns_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], roles: Roles
) -> None:
    agent = await create_agent(client, roles.other.headers, budget=5)
    response = await client.delete(f"/api/v1/agents/{agent.id}", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert (response.json()["leases_closed"], response.json()["returned"]) == (0, 0.0)
    entry = await assert_one_audit(pool, response, "AGENT_DELETED", agent.id)
    assert entry["user_role"] == "admin"
    await assert_ledger_invariants(pool, agent.id)


async def test_delete_racing_handshakes_leaves_nothing_outstanding(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], provider_id: str
) -> None:
    """The delete locks the agent first, like every grant: a lease granted before it is closed by it,
    none after it is granted at all."""
    agent = await create_agent(client, admin_headers, budget=100, providers=[provider_id])
    handshake = [
        client.post("/api/v1/budget/handshake", headers=agent.headers, json={"requested_budget": 1})
        for _ in range(12)
    ]
    results = await asyncio.gather(
        *handshake[:6], client.delete(f"/api/v1/agents/{agent.id}", headers=admin_headers), *handshake[6:]
    )
    deleted = results[6]
    assert deleted.status_code == 200, deleted.text
    granted = [r for r in results if r is not deleted and r.status_code == 200]
    assert all(r.status_code in (200, 401, 404) for r in results if r is not deleted)
    assert deleted.json()["leases_closed"] == len(granted)
    state = await assert_ledger_invariants(pool, agent.id)
    assert state.outstanding == 0
    assert not await pool.fetchval(
        "SELECT count(*) FROM leases WHERE agent_id = $1 AND status = 'open'", agent.id
    )


# --- providers ------------------------------------------------------------------------------------


async def test_assign_list_and_remove_providers(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], roles: Roles
) -> None:
    key_a, key_b = f"sk-a-{secrets.token_hex(8)}", f"sk-b-{secrets.token_hex(8)}"
    first = await create_provider(client, admin_headers, "openai", key_a)
    second = await create_provider(client, admin_headers, "anthropic", key_b)
    agent = await create_agent(client, roles.owner.headers, providers=[first["id"]])
    path = f"/api/v1/agents/{agent.id}/providers"

    listed = await client.get(path, headers=roles.owner.headers)
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"agent_id": agent.id, "providers": [first]}
    # replace the set, in order: the first is the default the handshake uses
    assigned = await client.put(
        path, headers=roles.owner.headers, json={"providers": [second["id"], first["id"]]}
    )
    assert assigned.status_code == 200, assigned.text
    assert [p["id"] for p in assigned.json()["providers"]] == [second["id"], first["id"]]
    entry = await assert_one_audit(pool, assigned, "AGENT_PROVIDERS_UPDATED", agent.id, key_a, key_b)
    assert first["id"] in entry["changes"]
    assert second["id"] in entry["changes"]
    got = (await client.get(f"/api/v1/agents/{agent.id}", headers=roles.owner.headers)).json()
    assert got["providers"] == [second["id"], first["id"]]
    lease = await open_lease(client, agent, 1)
    assert lease["provider"]["id"] == second["id"]
    for response in (listed, assigned):
        assert key_a not in response.text
        assert key_b not in response.text

    removed = await client.delete(f"{path}/{second['id']}", headers=roles.owner.headers)
    assert removed.status_code == 204, removed.text
    await assert_one_audit(pool, removed, "AGENT_PROVIDER_REMOVED", agent.id)
    assert [p["id"] for p in (await client.get(path, headers=roles.owner.headers)).json()["providers"]] == [
        first["id"]
    ]
    again = await client.delete(f"{path}/{second['id']}", headers=roles.owner.headers)
    await assert_refused(pool, again, 404, "RESOURCE_NOT_FOUND")
    malformed = await client.delete(f"{path}/not-a-provider", headers=roles.owner.headers)
    error = await assert_refused(pool, malformed, 400, "VALIDATION_ERROR")
    assert set(error["fields"]) == {"provider_id"}
    # an empty set is allowed: the agent then has no provider key to hand out
    emptied = await client.put(path, headers=roles.owner.headers, json={"providers": []})
    assert emptied.status_code == 200, emptied.text
    assert emptied.json()["providers"] == []
    key = await client.post("/api/v1/agents/provider-key", headers=agent.headers)
    assert_error(key, 404, "RESOURCE_NOT_FOUND")


async def test_a_bad_provider_set_is_400_naming_every_entry_and_changes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, roles: Roles, provider_id: str
) -> None:
    agent = await create_agent(client, roles.owner.headers, providers=[provider_id])
    before = await fingerprint(pool)
    path = f"/api/v1/agents/{agent.id}/providers"
    cases: list[tuple[Any, set[str]]] = [
        ({"providers": [provider_id, ids.new_id(ids.PROVIDER), "ip_x"]}, {"providers[2]"}),
        ({"providers": [provider_id, ids.new_id(ids.PROVIDER)]}, {"providers[1]"}),
        ({"providers": [provider_id, provider_id]}, {"providers"}),
        ({"providers": "all"}, {"providers"}),
        ({}, {"providers"}),
    ]
    for body, fields in cases:
        response = await client.put(path, headers=roles.owner.headers, json=body)
        error = await assert_refused(pool, response, 400, "VALIDATION_ERROR")
        assert set(error["fields"]) == fields, (body, error)
    assert await fingerprint(pool) == before


# --- status ---------------------------------------------------------------------------------------


async def test_status_shows_money_request_counts_and_the_last_request(
    client: httpx.AsyncClient, pool: asyncpg.Pool, roles: Roles, provider_id: str
) -> None:
    agent = await create_agent(client, roles.owner.headers, budget=40, providers=[provider_id])
    path = f"/api/v1/agents/{agent.id}/status"
    fresh = (await client.get(path, headers=roles.owner.headers)).json()
    assert fresh["requests"] == {"total": 0, "completed": 0, "failed": 0}
    assert "last_request_at" not in fresh
    assert (fresh["open_leases"], fresh["remaining"], fresh["percent_used"]) == (0, 40.0, 0.0)

    lease_id = (await open_lease(client, agent, 10))["lease_id"]
    calls = [usage(None, 2.5) for _ in range(3)] + [{**usage(None, 0.5), "status": "failed"}]
    calls[1]["timestamp"] = "2026-11-24T12:30:00.250Z"  # the latest
    batch = await client.post(
        "/api/v1/budget/report", headers=agent.headers, json={"lease_id": lease_id, "reports": calls}
    )
    assert batch.status_code == 200, batch.text
    response = await client.get(path, headers=roles.owner.headers)
    assert response.status_code == 200, response.text
    status = response.json()
    assert status["requests"] == {"total": 4, "completed": 3, "failed": 1}
    assert status["last_request_at"] == "2026-11-24T12:30:00.250Z"
    assert status["open_leases"] == 1
    assert (status["budget"], status["spent"], status["outstanding"], status["remaining"]) == (
        40.0,
        8.0,
        2.0,
        30.0,
    )
    assert status["percent_used"] == 20.0
    assert status["id"] == agent.id
    state = await assert_ledger_invariants(pool, agent.id)
    assert state.spent == 8_000_000
    assert "ic_token" not in status
    assert agent.ic_token not in response.text


async def test_deleted_agents_tokens_are_never_listed(
    client: httpx.AsyncClient, pool: asyncpg.Pool, roles: Roles
) -> None:
    agent = await create_agent(client, roles.owner.headers)
    response = await client.delete(f"/api/v1/agents/{agent.id}", headers=roles.owner.headers)
    assert response.status_code == 200, response.text
    tokens = await client.get(f"/api/v1/tokens?agent_id={agent.id}", headers=roles.owner.headers)
    assert tokens.json()["data"] == []
    direct = await client.post("/api/v1/agents/provider-key", headers=bearer(agent.ic_token))
    assert_error(direct, 401, "AUTH_INVALID_TOKEN")
