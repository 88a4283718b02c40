"""Providers: everyone reads, admins write; keys sealed at rest and never returned or logged.

Usage of a provider is the reported calls whose label is its type or its name;
a key update re-seals under the master key and the next handshake's IP token
opens to the new key; a delete cascades to the assignments and names the agents.
"""

import secrets
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar

from iron import ids
from iron.crypto import decrypt_ip_token, unseal
from tests.conftest import open_lease, provider_body
from tests.control_plane.helpers import (
    Roles,
    assert_error,
    assert_one_audit,
    assert_refused,
    create_agent,
    create_provider,
    fingerprint,
    make_roles,
    usage,
)
from tests.ledger_checks import assert_ledger_invariants

SHAPE = {
    "id",
    "name",
    "type",
    "endpoint",
    "models",
    "credentials_configured",
    "status",
    "created_at",
    "updated_at",
}


async def report(
    client: httpx.AsyncClient, agent_headers: dict[str, str], lease_id: str, calls: list[Any]
) -> None:
    response = await client.post(
        "/api/v1/budget/report", headers=agent_headers, json={"lease_id": lease_id, "reports": calls}
    )
    assert response.status_code == 200, response.text


def labelled(label: str, cost: float) -> dict[str, Any]:
    return {**usage(None, cost), "provider": label}


# --- read -----------------------------------------------------------------------------------------


async def test_every_role_lists_and_gets_providers_and_never_sees_a_key(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], roles: Roles
) -> None:
    key = f"sk-listed-{secrets.token_hex(8)}"
    created = await client.post(
        "/api/v1/providers",
        headers=admin_headers,
        json=provider_body(f"listed-{secrets.token_hex(4)}", key=key, type="mistral"),
    )
    assert created.status_code == 201, created.text
    provider = created.json()
    assert set(provider) == SHAPE
    assert key not in created.text
    await assert_one_audit(pool, created, "PROVIDER_CREATED", provider["id"], key)
    for headers in (admin_headers, roles.owner.headers, roles.viewer.headers):
        listed = await client.get(f"/api/v1/providers?search={provider['name']}", headers=headers)
        assert listed.status_code == 200, listed.text
        assert listed.json()["data"] == [provider]
        got = await client.get(f"/api/v1/providers/{provider['id']}", headers=headers)
        assert got.status_code == 200, got.text
        assert {k: v for k, v in got.json().items() if k != "usage"} == provider
        for response in (listed, got):
            assert key not in response.text
            assert "api_key" not in response.text
    malformed = await client.get("/api/v1/providers/provider_1", headers=roles.viewer.headers)
    assert set(assert_error(malformed, 400, "VALIDATION_ERROR")["fields"]) == {"provider_id"}
    missing = await client.get(f"/api/v1/providers/{ids.new_id(ids.PROVIDER)}", headers=roles.viewer.headers)
    assert_error(missing, 404, "RESOURCE_NOT_FOUND")


async def test_the_list_filters_sorts_searches(
    client: httpx.AsyncClient, admin_headers: dict[str, str], roles: Roles
) -> None:
    tag = secrets.token_hex(3)
    made = []
    for n, type_ in enumerate(("cohere", "google", "cohere")):
        response = await client.post(
            "/api/v1/providers",
            headers=admin_headers,
            json={
                "name": f"{tag}-{n}",
                "type": type_,
                "endpoint": "https://llm.example/v1",
                "credentials": {"api_key": "sk-x"},
            },
        )
        assert response.status_code == 201, response.text
        made.append(response.json())
    disabled = await client.put(
        f"/api/v1/providers/{made[2]['id']}", headers=admin_headers, json={"status": "disabled"}
    )
    assert disabled.status_code == 200, disabled.text
    headers = roles.viewer.headers
    names = (await client.get(f"/api/v1/providers?search={tag.upper()}&sort=-name", headers=headers)).json()
    assert [p["name"] for p in names["data"]] == [f"{tag}-2", f"{tag}-1", f"{tag}-0"]
    cohere = (await client.get(f"/api/v1/providers?search={tag}&type=cohere", headers=headers)).json()
    assert [p["id"] for p in cohere["data"]] == [made[0]["id"], made[2]["id"]]
    active = (
        await client.get(f"/api/v1/providers?search={tag}&type=cohere&status=active", headers=headers)
    ).json()
    assert [p["id"] for p in active["data"]] == [made[0]["id"]]


async def test_usage_counts_calls_labelled_with_the_type_or_the_name_scoped_to_the_reader(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], roles: Roles
) -> None:
    provider = await create_provider(client, admin_headers, "custom")
    other = await make_roles(client, pool)
    mine = await create_agent(client, roles.owner.headers, providers=[provider["id"]])
    theirs = await create_agent(client, other.owner.headers, providers=[provider["id"]])
    unassigned = await create_agent(client, other.owner.headers)
    name = provider["name"]
    for agent, calls in (
        (mine, [labelled(name.upper(), 1.25), labelled("custom", 0.5), labelled("openai", 9)]),
        (theirs, [labelled(name, 2), labelled(name, 2)]),
        (unassigned, [labelled("custom", 0.25)]),  # the label decides, not the assignment
    ):
        await report(client, agent.headers, (await open_lease(client, agent, 20))["lease_id"], calls)

    def usage_of(response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        figures: dict[str, Any] = response.json()["usage"]
        return figures

    path = f"/api/v1/providers/{provider['id']}"
    everyone = usage_of(await client.get(path, headers=admin_headers))
    assert {k: everyone[k] for k in ("requests", "spent", "agents")} == {
        "requests": 5,
        "spent": 6.0,
        "agents": 2,
    }
    assert everyone["last_request_at"] == "2026-11-24T10:00:00.000Z"
    own = usage_of(await client.get(path, headers=roles.owner.headers))
    assert {k: own[k] for k in ("requests", "spent", "agents")} == {"requests": 2, "spent": 1.75, "agents": 1}
    nothing = usage_of(await client.get(path, headers=roles.viewer.headers))
    assert nothing == {"requests": 0, "spent": 0.0, "agents": 0}


# --- write ----------------------------------------------------------------------------------------


async def test_only_admins_write_providers(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], roles: Roles
) -> None:
    provider = await create_provider(client, admin_headers)
    path = f"/api/v1/providers/{provider['id']}"
    before = await fingerprint(pool)
    for person in (roles.owner, roles.viewer):
        for method, url, body in [
            (
                "POST",
                "/api/v1/providers",
                {
                    "name": "n",
                    "type": "openai",
                    "endpoint": "https://x.example",
                    "credentials": {"api_key": "k"},
                },
            ),
            ("PUT", path, {"credentials": {"api_key": "sk-hijack"}}),
            ("DELETE", path, None),
        ]:
            response = await client.request(method, url, headers=person.headers, json=body)
            await assert_refused(pool, response, 403, "PERMISSION_DENIED")
    assert await fingerprint(pool) == before


async def test_a_new_key_is_sealed_for_the_provider_and_reaches_the_next_handshake(
    client: httpx.AsyncClient, pool: asyncpg.Pool, app: Litestar, admin_headers: dict[str, str], roles: Roles
) -> None:
    old_key, new_key = f"sk-old-{secrets.token_hex(8)}", f"sk-new-{secrets.token_hex(8)}"
    provider = await create_provider(client, admin_headers, "anthropic", old_key)
    agent = await create_agent(client, roles.owner.headers, providers=[provider["id"]])
    assert decrypt_ip_token(agent.ic_token, (await open_lease(client, agent, 1))["ip_token"]) == old_key

    path = f"/api/v1/providers/{provider['id']}"
    response = await client.put(
        path,
        headers=admin_headers,
        json={"credentials": {"api_key": new_key}, "endpoint": "https://new.example/v1", "models": ["m2"]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["endpoint"], body["models"], body["name"]) == (
        "https://new.example/v1",
        ["m2"],
        provider["name"],
    )
    assert body["credentials_configured"] is True
    assert body["updated_at"] > provider["updated_at"]
    assert set(body) == SHAPE
    assert new_key not in response.text
    assert old_key not in response.text
    entry = await assert_one_audit(pool, response, "PROVIDER_UPDATED", provider["id"], new_key, old_key)
    assert "https://new.example/v1" in entry["changes"]
    assert '"key_replaced": true' in entry["metadata"]
    # at rest: sealed under the master key, bound to this provider's id
    stored = bytes(await pool.fetchval("SELECT key_ciphertext FROM providers WHERE id = $1", provider["id"]))
    assert new_key.encode() not in stored
    assert unseal(app.state.settings.master_key, stored, provider["id"].encode()) == new_key.encode()
    # the very next handshake carries the new key, for this agent's IC token only
    lease = await open_lease(client, agent, 1)
    assert decrypt_ip_token(agent.ic_token, lease["ip_token"]) == new_key
    assert lease["provider"]["base_url"] == "https://new.example/v1"
    await assert_ledger_invariants(pool, agent.id)
    # an update without credentials keeps the key
    renamed = await client.put(path, headers=admin_headers, json={"name": f"renamed-{secrets.token_hex(3)}"})
    assert renamed.status_code == 200, renamed.text
    assert (
        '"key_replaced": false'
        in (await assert_one_audit(pool, renamed, "PROVIDER_UPDATED", provider["id"]))["metadata"]
    )
    assert decrypt_ip_token(agent.ic_token, (await open_lease(client, agent, 1))["ip_token"]) == new_key
    dump = await pool.fetchval("SELECT string_agg(t::text, '|') FROM audit_logs t")
    assert new_key not in dump
    assert old_key not in dump


async def test_a_disabled_provider_is_skipped_at_handshake(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], roles: Roles
) -> None:
    first = await create_provider(client, admin_headers, "openai")
    second = await create_provider(client, admin_headers, "anthropic")
    agent = await create_agent(client, roles.owner.headers, providers=[first["id"], second["id"]])
    assert (await open_lease(client, agent, 1))["provider"]["id"] == first["id"]
    response = await client.put(
        f"/api/v1/providers/{first['id']}", headers=admin_headers, json={"status": "disabled"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "disabled"
    assert (await open_lease(client, agent, 1))["provider"]["id"] == second["id"]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        pytest.param(
            {"name": "", "type": "gpt", "endpoint": "ftp://x", "models": [""], "status": "gone"},
            {"name", "type", "endpoint", "models[0]", "status"},
            id="5",
        ),
        pytest.param({"credentials": {"api_key": ""}}, {"credentials.api_key"}, id="empty-key"),
        pytest.param({"credentials": {}}, {"credentials"}, id="no-key"),
        pytest.param({}, {"body"}, id="empty"),
        pytest.param({"api_key": "sk-top-level"}, {"body"}, id="unknown-field"),
    ],
)
async def test_a_bad_update_is_400_naming_every_field_and_changes_nothing(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    admin_headers: dict[str, str],
    body: dict[str, Any],
    fields: set[str],
) -> None:
    provider = await create_provider(client, admin_headers)
    before = await fingerprint(pool)
    response = await client.put(f"/api/v1/providers/{provider['id']}", headers=admin_headers, json=body)
    error = await assert_refused(pool, response, 400, "VALIDATION_ERROR")
    assert set(error["fields"]) == fields, error
    assert "sk-top-level" not in response.text
    assert await fingerprint(pool) == before


async def test_update_conflicts_and_unknown_ids(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str]
) -> None:
    first = await create_provider(client, admin_headers)
    second = await create_provider(client, admin_headers)
    before = await fingerprint(pool)
    clash = await client.put(
        f"/api/v1/providers/{second['id']}", headers=admin_headers, json={"name": first["name"].upper()}
    )
    await assert_refused(pool, clash, 409, "RESOURCE_CONFLICT")
    for method, body in (("PUT", {"name": "x"}), ("DELETE", None)):
        missing = await client.request(
            method, f"/api/v1/providers/{ids.new_id(ids.PROVIDER)}", headers=admin_headers, json=body
        )
        await assert_refused(pool, missing, 404, "RESOURCE_NOT_FOUND")
        malformed = await client.request(method, "/api/v1/providers/ip_1", headers=admin_headers, json=body)
        assert set((await assert_refused(pool, malformed, 400, "VALIDATION_ERROR"))["fields"]) == {
            "provider_id"
        }
    assert await fingerprint(pool) == before


# --- delete ---------------------------------------------------------------------------------------


async def test_delete_cascades_to_assignments_and_names_the_agents_affected(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], roles: Roles
) -> None:
    key = f"sk-doomed-{secrets.token_hex(8)}"
    doomed = await create_provider(client, admin_headers, "openai", key)
    kept = await create_provider(client, admin_headers, "anthropic")
    first = await create_agent(client, roles.owner.headers, providers=[doomed["id"], kept["id"]])
    second = await create_agent(client, admin_headers, providers=[doomed["id"]])
    gone = await create_agent(client, roles.owner.headers, providers=[doomed["id"]])
    deleted_agent = await client.delete(f"/api/v1/agents/{gone.id}", headers=roles.owner.headers)
    assert deleted_agent.status_code == 200, deleted_agent.text
    bystander = await create_agent(client, roles.owner.headers, providers=[kept["id"]])

    response = await client.delete(f"/api/v1/providers/{doomed['id']}", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": doomed["id"],
        "deleted": True,
        "affected_agents": sorted([first.id, second.id]),
    }
    entry = await assert_one_audit(pool, response, "PROVIDER_DELETED", doomed["id"], key)
    assert first.id in entry["metadata"]
    assert doomed["name"] in entry["changes"]
    assert not await pool.fetchval(
        "SELECT count(*) FROM agent_providers WHERE provider_id = $1", doomed["id"]
    )
    assert_error(
        await client.get(f"/api/v1/providers/{doomed['id']}", headers=admin_headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    providers_of = {
        agent.id: (await client.get(f"/api/v1/agents/{agent.id}", headers=admin_headers)).json()["providers"]
        for agent in (first, second, bystander)
    }
    assert providers_of == {first.id: [kept["id"]], second.id: [], bystander.id: [kept["id"]]}
    # the first agent falls back to its remaining provider; the second has none to hand out
    assert (await open_lease(client, first, 1))["provider"]["id"] == kept["id"]
    assert (await open_lease(client, second, 1))["provider"] is None
    again = await client.delete(f"/api/v1/providers/{doomed['id']}", headers=admin_headers)
    await assert_refused(pool, again, 404, "RESOURCE_NOT_FOUND")
    # nothing left to list for a deleted provider's assignment
    removal = await client.delete(
        f"/api/v1/agents/{first.id}/providers/{doomed['id']}", headers=admin_headers
    )
    await assert_refused(pool, removal, 404, "RESOURCE_NOT_FOUND")
