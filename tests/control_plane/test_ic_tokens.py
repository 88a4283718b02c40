"""IC tokens, both families of endpoints: per agent (``/agents/{id}/ic-token``) and ``/tokens``.

One live token per agent; create refuses a second (409); rotation is atomic (the
old token is refused on the very next call, the new one works, and two racing
rotations leave exactly one live token); a value is shown only when issued.
"""

import asyncio
import secrets
from typing import Any

import asyncpg
import httpx
import pytest

from iron import ids
from tests.conftest import AgentHandle, open_lease
from tests.control_plane.helpers import (
    Roles,
    assert_error,
    assert_one_audit,
    assert_refused,
    bearer,
    create_agent,
    demote_to_viewer,
    fingerprint,
    make_roles,
)
from tests.ledger_checks import assert_ledger_invariants

METADATA = {"id", "agent_id", "agent_name", "status", "created_at"}


async def live_tokens(pool: asyncpg.Pool, agent_id: str) -> list[str]:
    rows = await pool.fetch("SELECT id FROM ic_tokens WHERE agent_id = $1 AND revoked_at IS NULL", agent_id)
    return [row["id"] for row in rows]


async def token_id_of(client: httpx.AsyncClient, headers: dict[str, str], agent_id: str) -> str:
    response = await client.get(f"/api/v1/agents/{agent_id}/ic-token", headers=headers)
    assert response.status_code == 200, response.text
    token_id: str = response.json()["id"]
    return token_id


async def works(client: httpx.AsyncClient, token: str) -> bool:
    """Whether the budget protocol takes the token (404: authenticated, but the agent has no provider)."""
    response = await client.post("/api/v1/agents/provider-key", headers=bearer(token))
    assert response.status_code in (200, 401, 404), response.text
    return response.status_code != 401


async def assert_no_token_value_in_audit(pool: asyncpg.Pool, *tokens: str) -> None:
    dump = await pool.fetchval("SELECT string_agg(t::text, '|') FROM audit_logs t")
    for token in tokens:
        assert token not in dump


# --- create ---------------------------------------------------------------------------------------


async def test_create_refuses_a_second_live_token_and_issues_one_after_a_revoke(
    client: httpx.AsyncClient, pool: asyncpg.Pool, roles: Roles, provider_id: str
) -> None:
    agent = await create_agent(client, roles.owner.headers, providers=[provider_id])
    existing = await token_id_of(client, roles.owner.headers, agent.id)
    before = await fingerprint(pool)
    for path, body in (
        ("/api/v1/tokens", {"agent_id": agent.id}),
        (f"/api/v1/agents/{agent.id}/ic-token", None),
    ):
        clash = await client.post(path, headers=roles.owner.headers, json=body)
        error = await assert_refused(pool, clash, 409, "RESOURCE_CONFLICT")
        assert error["details"] == {"agent_id": agent.id, "existing_token_id": existing}
    assert await fingerprint(pool) == before
    assert await works(client, agent.ic_token)

    revoked = await client.delete(f"/api/v1/agents/{agent.id}/ic-token", headers=roles.owner.headers)
    assert revoked.status_code == 204, revoked.text
    await assert_one_audit(pool, revoked, "IC_TOKEN_REVOKED", existing)
    created = await client.post("/api/v1/tokens", headers=roles.owner.headers, json={"agent_id": agent.id})
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"id", "agent_id", "token", "created_at"}
    assert body["agent_id"] == agent.id
    assert ids.is_valid(ids.IC_TOKEN, body["id"])
    assert body["token"].startswith("ic_")
    assert not ids.is_valid(ids.IC_TOKEN, body["token"])  # the value is not an id
    assert body["created_at"].endswith("Z")
    await assert_one_audit(pool, created, "IC_TOKEN_CREATED", body["id"], body["token"])
    assert await live_tokens(pool, agent.id) == [body["id"]]
    assert await works(client, body["token"])
    assert not await works(client, agent.ic_token)
    # the per-agent family does the same, after its own revoke
    await client.delete(f"/api/v1/tokens/{body['id']}", headers=roles.owner.headers)
    again = await client.post(f"/api/v1/agents/{agent.id}/ic-token", headers=roles.owner.headers)
    assert again.status_code == 201, again.text
    assert await works(client, again.json()["token"])
    await assert_no_token_value_in_audit(pool, agent.ic_token, body["token"], again.json()["token"])


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        pytest.param({}, {"agent_id"}, id="missing"),
        pytest.param({"agent_id": "agent_1"}, {"agent_id"}, id="malformed"),
        pytest.param({"agent_id": 7}, {"agent_id"}, id="wrong-type"),
        pytest.param(b"{bad", {"body"}, id="not-json"),
        pytest.param(b"[", {"body"}, id="truncated"),
    ],
)
async def test_a_bad_create_body_is_400(
    client: httpx.AsyncClient, pool: asyncpg.Pool, roles: Roles, body: Any, fields: set[str]
) -> None:
    content = body if isinstance(body, bytes) else None
    response = await client.post(
        "/api/v1/tokens", headers=roles.owner.headers, content=content, json=None if content else body
    )
    error = await assert_refused(pool, response, 400, "VALIDATION_ERROR")
    assert set(error["fields"]) == fields


# --- read -----------------------------------------------------------------------------------------


async def test_metadata_is_readable_by_who_may_read_the_agent_and_never_shows_the_value(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], roles: Roles
) -> None:
    agent = await create_agent(client, roles.owner.headers)
    token_id = await token_id_of(client, roles.owner.headers, agent.id)
    for headers in (roles.owner.headers, admin_headers):
        for path in (f"/api/v1/tokens/{token_id}", f"/api/v1/agents/{agent.id}/ic-token"):
            response = await client.get(path, headers=headers)
            assert response.status_code == 200, response.text
            assert set(response.json()) == METADATA
            assert response.json()["status"] == "active"
            assert agent.ic_token not in response.text
    for stranger in (roles.other.headers, roles.viewer.headers):
        assert_error(
            await client.get(f"/api/v1/tokens/{token_id}", headers=stranger), 404, "RESOURCE_NOT_FOUND"
        )
        got = await client.get(f"/api/v1/agents/{agent.id}/ic-token", headers=stranger)
        assert_error(got, 404, "RESOURCE_NOT_FOUND")
    malformed = await client.get("/api/v1/tokens/ic_abc", headers=admin_headers)
    assert set(assert_error(malformed, 400, "VALIDATION_ERROR")["fields"]) == {"token_id"}
    missing = await client.get(f"/api/v1/tokens/{ids.new_id(ids.IC_TOKEN)}", headers=admin_headers)
    assert_error(missing, 404, "RESOURCE_NOT_FOUND")
    # revoked: still readable by id, with its revocation time; the agent then has no live token
    await client.delete(f"/api/v1/agents/{agent.id}/ic-token", headers=roles.owner.headers)
    revoked = (await client.get(f"/api/v1/tokens/{token_id}", headers=roles.owner.headers)).json()
    assert revoked["status"] == "revoked"
    assert revoked["revoked_at"] >= revoked["created_at"]
    none = await client.get(f"/api/v1/agents/{agent.id}/ic-token", headers=roles.owner.headers)
    assert_error(none, 404, "RESOURCE_NOT_FOUND")


async def test_the_list_is_scoped_filtered(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str]
) -> None:
    roles = await make_roles(client, pool)
    tag = secrets.token_hex(3)
    mine = [await create_agent(client, roles.owner.headers, name=f"{tag}-mine-{n}") for n in range(3)]
    theirs = await create_agent(client, roles.other.headers, name=f"{tag}-theirs")
    rotated = await client.post(
        f"/api/v1/agents/{mine[0].id}/ic-token/regenerate", headers=roles.owner.headers
    )
    assert rotated.status_code == 200, rotated.text

    listed = await client.get("/api/v1/tokens?per_page=100", headers=roles.owner.headers)
    assert listed.status_code == 200, listed.text
    data = listed.json()["data"]
    assert {t["agent_id"] for t in data} == {a.id for a in mine}
    assert listed.json()["pagination"]["total"] == 4  # 3 agents, one of them rotated
    assert all(set(t) <= METADATA | {"revoked_at"} for t in data)
    for agent in (*mine, theirs):
        assert agent.ic_token not in listed.text
    assert rotated.json()["ic_token"]["token"] not in listed.text
    live = (await client.get("/api/v1/tokens?status=active", headers=roles.owner.headers)).json()
    assert live["pagination"]["total"] == 3
    old = (
        await client.get(f"/api/v1/tokens?status=revoked&agent_id={mine[0].id}", headers=roles.owner.headers)
    ).json()
    assert [t["status"] for t in old["data"]] == ["revoked"]
    by_name = (
        await client.get(f"/api/v1/tokens?search={tag.upper()}-MINE-1", headers=roles.owner.headers)
    ).json()
    assert [t["agent_id"] for t in by_name["data"]] == [mine[1].id]
    # sorting by the agent's name, both ways
    ascending = (
        await client.get("/api/v1/tokens?status=active&sort=agent_name", headers=roles.owner.headers)
    ).json()
    assert [t["agent_name"] for t in ascending["data"]] == [f"{tag}-mine-{n}" for n in range(3)]
    descending = (
        await client.get("/api/v1/tokens?status=active&sort=-agent_name", headers=roles.owner.headers)
    ).json()
    assert [t["agent_name"] for t in descending["data"]] == [f"{tag}-mine-{n}" for n in (2, 1, 0)]
    # an admin sees everyone's; a viewer with no agents sees none
    everyone = (await client.get(f"/api/v1/tokens?search={tag}&status=active", headers=admin_headers)).json()
    assert everyone["pagination"]["total"] == 4


# --- revoke ---------------------------------------------------------------------------------------


async def test_revoke_by_id_refuses_the_token_at_once_and_twice_is_409(
    client: httpx.AsyncClient, pool: asyncpg.Pool, roles: Roles, provider_id: str
) -> None:
    agent = await create_agent(client, roles.owner.headers, providers=[provider_id])
    lease_id = (await open_lease(client, agent, 5))["lease_id"]
    token_id = await token_id_of(client, roles.owner.headers, agent.id)
    before = await fingerprint(pool)
    for stranger in (roles.other.headers, roles.viewer.headers):
        response = await client.delete(f"/api/v1/tokens/{token_id}", headers=stranger)
        await assert_refused(pool, response, 404, "RESOURCE_NOT_FOUND")
    assert await fingerprint(pool) == before
    response = await client.delete(f"/api/v1/tokens/{token_id}", headers=roles.owner.headers)
    assert response.status_code == 204, response.text
    assert response.content == b""
    await assert_one_audit(pool, response, "IC_TOKEN_REVOKED", token_id, agent.ic_token)
    refused = await client.post(
        "/api/v1/budget/refresh", headers=agent.headers, json={"lease_id": lease_id, "requested_budget": 1}
    )
    assert_error(refused, 401, "AUTH_INVALID_TOKEN")
    assert await live_tokens(pool, agent.id) == []
    twice = await client.delete(f"/api/v1/tokens/{token_id}", headers=roles.owner.headers)
    await assert_refused(pool, twice, 409, "RESOURCE_CONFLICT")
    malformed = await client.delete("/api/v1/tokens/nope", headers=roles.owner.headers)
    assert set((await assert_refused(pool, malformed, 400, "VALIDATION_ERROR"))["fields"]) == {"token_id"}
    missing = await client.delete(f"/api/v1/tokens/{ids.new_id(ids.IC_TOKEN)}", headers=roles.owner.headers)
    await assert_refused(pool, missing, 404, "RESOURCE_NOT_FOUND")
    # the lease belongs to the agent: a new token carries on with it
    created = await client.post(f"/api/v1/agents/{agent.id}/ic-token", headers=roles.owner.headers)
    refreshed = await client.post(
        "/api/v1/budget/refresh",
        headers=bearer(created.json()["token"]),
        json={"lease_id": lease_id, "requested_budget": 1},
    )
    assert refreshed.status_code == 200, refreshed.text
    await assert_ledger_invariants(pool, agent.id)


async def test_a_viewer_reads_their_agents_tokens_and_changes_none(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    roles = await make_roles(client, pool)
    agent = await create_agent(client, roles.owner.headers)
    token_id = await token_id_of(client, roles.owner.headers, agent.id)
    await demote_to_viewer(pool, roles.owner)
    viewer = roles.owner.headers
    assert (await client.get(f"/api/v1/tokens/{token_id}", headers=viewer)).status_code == 200
    assert (await client.get("/api/v1/tokens", headers=viewer)).json()["pagination"]["total"] == 1
    before = await fingerprint(pool)
    for method, path, body in [
        ("POST", "/api/v1/tokens", {"agent_id": agent.id}),
        ("DELETE", f"/api/v1/tokens/{token_id}", None),
        ("PUT", f"/api/v1/tokens/{token_id}/rotate", None),
        ("POST", f"/api/v1/agents/{agent.id}/ic-token", None),
        ("DELETE", f"/api/v1/agents/{agent.id}/ic-token", None),
        ("POST", f"/api/v1/agents/{agent.id}/ic-token/regenerate", None),
    ]:
        response = await client.request(method, path, headers=viewer, json=body)
        await assert_refused(pool, response, 403, "PERMISSION_DENIED")
    assert await fingerprint(pool) == before
    assert await works(client, agent.ic_token)


# --- rotate ---------------------------------------------------------------------------------------


async def test_rotate_invalidates_the_old_token_at_once_and_the_new_one_works(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    admin_headers: dict[str, str],
    roles: Roles,
    provider_id: str,
) -> None:
    agent = await create_agent(client, roles.owner.headers, providers=[provider_id])
    lease_id = (await open_lease(client, agent, 5))["lease_id"]
    token_id = await token_id_of(client, roles.owner.headers, agent.id)
    response = await client.put(f"/api/v1/tokens/{token_id}/rotate", headers=roles.owner.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["agent_id"] == agent.id
    assert body["old_token_invalidated"] is True
    new = body["ic_token"]
    assert set(new) == {"id", "token", "created_at"}
    assert new["id"] != token_id
    entry = await assert_one_audit(
        pool, response, "IC_TOKEN_REGENERATED", new["id"], agent.ic_token, new["token"]
    )
    assert token_id in entry["metadata"]
    assert not await works(client, agent.ic_token)
    refreshed = await client.post(
        "/api/v1/budget/refresh",
        headers=bearer(new["token"]),
        json={"lease_id": lease_id, "requested_budget": 1},
    )
    assert refreshed.status_code == 200, refreshed.text
    assert await live_tokens(pool, agent.id) == [new["id"]]
    # the old token cannot be rotated again: it is no longer the live one
    stale = await client.put(f"/api/v1/tokens/{token_id}/rotate", headers=roles.owner.headers)
    await assert_refused(pool, stale, 409, "RESOURCE_CONFLICT")
    # others cannot; an admin can
    for stranger in (roles.other.headers, roles.viewer.headers):
        response = await client.put(f"/api/v1/tokens/{new['id']}/rotate", headers=stranger)
        await assert_refused(pool, response, 404, "RESOURCE_NOT_FOUND")
    by_admin = await client.put(f"/api/v1/tokens/{new['id']}/rotate", headers=admin_headers)
    assert by_admin.status_code == 200, by_admin.text
    assert not await works(client, new["token"])
    assert await works(client, by_admin.json()["ic_token"]["token"])
    malformed = await client.put("/api/v1/tokens/agent_1/rotate", headers=admin_headers)
    assert set((await assert_refused(pool, malformed, 400, "VALIDATION_ERROR"))["fields"]) == {"token_id"}
    missing = await client.put(f"/api/v1/tokens/{ids.new_id(ids.IC_TOKEN)}/rotate", headers=admin_headers)
    await assert_refused(pool, missing, 404, "RESOURCE_NOT_FOUND")
    await assert_ledger_invariants(pool, agent.id)


async def test_two_racing_rotations_of_one_token_leave_exactly_one_live_token(
    client: httpx.AsyncClient, pool: asyncpg.Pool, roles: Roles
) -> None:
    agent = await create_agent(client, roles.owner.headers)
    token_id = await token_id_of(client, roles.owner.headers, agent.id)
    path = f"/api/v1/tokens/{token_id}/rotate"
    first, second = await asyncio.gather(
        client.put(path, headers=roles.owner.headers), client.put(path, headers=roles.owner.headers)
    )
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 409], (first.text, second.text)
    winner = first if first.status_code == 200 else second
    loser = second if winner is first else first
    assert_error(loser, 409, "RESOURCE_CONFLICT")
    new = winner.json()["ic_token"]
    assert await live_tokens(pool, agent.id) == [new["id"]]
    assert await works(client, new["token"])
    assert not await works(client, agent.ic_token)


async def test_racing_regenerations_of_one_agent_leave_exactly_one_live_token(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], roles: Roles
) -> None:
    """Per agent, regenerate replaces whatever is live: all succeed, in turn; the last one's token lives."""
    agent = await create_agent(client, roles.owner.headers)
    path = f"/api/v1/agents/{agent.id}/ic-token/regenerate"
    responses = await asyncio.gather(
        *(client.post(path, headers=roles.owner.headers if n % 2 else admin_headers) for n in range(6))
    )
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    issued = [r.json()["ic_token"] for r in responses]
    live = await live_tokens(pool, agent.id)
    assert len(live) == 1
    assert live[0] in {t["id"] for t in issued}
    working = [t["id"] for t in issued if await works(client, t["token"])]
    assert working == live
    assert not await works(client, agent.ic_token)
    entries = await pool.fetch(
        "SELECT resource_id FROM audit_logs"
        " WHERE operation = 'IC_TOKEN_REGENERATED' AND metadata->>'agent_id' = $1",
        agent.id,
    )
    assert sorted(e["resource_id"] for e in entries) == sorted(t["id"] for t in issued)
    await assert_no_token_value_in_audit(pool, *(t["token"] for t in issued))


async def test_a_user_token_cannot_be_used_as_an_ic_token_nor_an_ic_token_here(
    client: httpx.AsyncClient, pool: asyncpg.Pool, roles: Roles
) -> None:
    agent: AgentHandle = await create_agent(client, roles.owner.headers)
    token_id = await token_id_of(client, roles.owner.headers, agent.id)
    before = await fingerprint(pool)
    for method, path in [
        ("GET", "/api/v1/tokens"),
        ("GET", f"/api/v1/tokens/{token_id}"),
        ("PUT", f"/api/v1/tokens/{token_id}/rotate"),
        ("DELETE", f"/api/v1/tokens/{token_id}"),
        ("GET", f"/api/v1/agents/{agent.id}/ic-token"),
    ]:
        response = await client.request(method, path, headers=agent.headers)
        await assert_refused(pool, response, 403, "PERMISSION_DENIED")
        unauthenticated = await client.request(method, path)
        await assert_refused(pool, unauthenticated, 401, "AUTH_INVALID_TOKEN")
    assert await fingerprint(pool) == before
