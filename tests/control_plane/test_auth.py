"""Authentication and authorisation, end to end on the real application.

- a regenerated or revoked IC token is refused (401) on the very next budget call;
- every kind of bad bearer (garbage, other schemes, foreign, wrong type, alg none, expired) is 401;
- login answers the same for an unknown email and a wrong password, and never leaks a hash;
- roles: admin, user (own agents) and viewer (read-only) (every route and role: test_permission_matrix.py);
- provider keys are stored as ciphertext and never returned by the admin API.
"""

import secrets
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from cryptography.exceptions import InvalidTag
from litestar import Litestar

from iron import ids
from iron.crypto import unseal
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, MakeAgent, open_lease, provider_body
from tests.control_plane.helpers import Roles, assert_error, bearer, fingerprint, make_jwt, make_person, usage
from tests.ledger_checks import assert_ledger_invariants

# --- helpers -------------------------------------------------------------------------------------


def protocol_calls(lease_id: str) -> list[tuple[str, dict[str, Any] | None]]:
    """One valid request to every budget protocol endpoint (and its aliases), given an open lease."""
    single = usage(lease_id)
    batch = {"lease_id": lease_id, "reports": [{k: v for k, v in usage(lease_id).items() if k != "lease_id"}]}
    return [
        ("/api/v1/budget/handshake", {"requested_budget": 1}),
        ("/api/budget/handshake", {"requested_budget": 1}),
        ("/api/v1/auth/handshake", {"requested_budget": 1}),
        ("/api/v1/budget/report", single),
        ("/api/v1/budget/report", batch),
        ("/api/budget/report", single),
        ("/api/v1/budget/refresh", {"lease_id": lease_id, "requested_budget": 1}),
        ("/api/budget/refresh", {"lease_id": lease_id, "requested_budget": 0}),
        ("/api/v1/budget/return", {"lease_id": lease_id}),
        ("/api/budget/return", {"lease_id": lease_id}),
        ("/api/v1/agents/provider-key", None),
    ]


async def assert_token_refused_everywhere(
    client: httpx.AsyncClient, pool: asyncpg.Pool, token: str, lease_id: str
) -> None:
    """The token gets 401 AUTH_INVALID_TOKEN on every protocol call, as a header or a body field."""
    before = await fingerprint(pool)
    for path, body in protocol_calls(lease_id):
        response = await client.post(path, headers=bearer(token), json=body)
        assert_error(response, 401, "AUTH_INVALID_TOKEN")
        assert "api_key" not in response.text
        if body is not None:  # the seed's body field must not be a way around the revocation
            response = await client.post(path, json={**body, "ic_token": token})
            assert_error(response, 401, "AUTH_INVALID_TOKEN")
    assert await fingerprint(pool) == before


async def assert_token_works(client: httpx.AsyncClient, token: str, lease_id: str) -> None:
    refreshed = await client.post(
        "/api/v1/budget/refresh", headers=bearer(token), json={"lease_id": lease_id, "requested_budget": 1}
    )
    assert refreshed.status_code == 200, refreshed.text
    reported = await client.post("/api/v1/budget/report", headers=bearer(token), json=usage(lease_id))
    assert reported.status_code == 204, reported.text
    key = await client.post("/api/v1/agents/provider-key", headers=bearer(token))
    assert key.status_code == 200, key.text
    fresh = await client.post("/api/v1/budget/handshake", headers=bearer(token), json={"requested_budget": 1})
    assert fresh.status_code == 200, fresh.text
    for lease in (lease_id, fresh.json()["lease_id"]):
        returned = await client.post("/api/v1/budget/return", headers=bearer(token), json={"lease_id": lease})
        assert returned.status_code == 200, returned.text


@pytest.fixture(scope="module")
async def admin_id(client: httpx.AsyncClient) -> str:
    response = await client.post(
        "/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200, response.text
    user_id: str = response.json()["user"]["id"]
    return user_id


# --- IC token rotation and revocation -------------------------------------------------------------


async def test_regenerate_invalidates_the_old_ic_token_at_once_and_the_new_one_works(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=50)
    lease_id = (await open_lease(client, agent, 5))["lease_id"]
    response = await client.post(f"/api/v1/agents/{agent.id}/ic-token/regenerate", headers=admin_headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["agent_id"] == agent.id
    assert body["old_token_invalidated"] is True
    assert set(body["ic_token"]) == {"id", "token", "created_at"}
    assert ids.is_valid(ids.IC_TOKEN, body["ic_token"]["id"])
    assert body["ic_token"]["created_at"].endswith("Z")
    new_token = body["ic_token"]["token"]
    assert new_token.startswith("ic_")
    assert new_token != agent.ic_token
    # the very next call with the old token, on every endpoint, is refused
    await assert_token_refused_everywhere(client, pool, agent.ic_token, lease_id)
    # the lease belongs to the agent, not the token: the new token carries on with it
    await assert_token_works(client, new_token, lease_id)
    await assert_ledger_invariants(pool, agent.id)
    # exactly one live token per agent, and the database holds only hashes
    live = await pool.fetch(
        "SELECT id, token_hash FROM ic_tokens WHERE agent_id = $1 AND revoked_at IS NULL", agent.id
    )
    assert [row["id"] for row in live] == [body["ic_token"]["id"]]
    assert new_token.encode() not in bytes(live[0]["token_hash"])


async def test_regenerating_twice_leaves_only_the_newest_token_valid(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=50)
    lease_id = (await open_lease(client, agent, 5))["lease_id"]
    tokens = [agent.ic_token]
    for _ in range(2):
        response = await client.post(f"/api/v1/agents/{agent.id}/ic-token/regenerate", headers=admin_headers)
        assert response.status_code == 200, response.text
        tokens.append(response.json()["ic_token"]["token"])
    assert len(set(tokens)) == 3
    for old in tokens[:2]:
        response = await client.post("/api/v1/agents/provider-key", headers=bearer(old))
        assert_error(response, 401, "AUTH_INVALID_TOKEN")
    await assert_token_works(client, tokens[2], lease_id)


async def test_revoke_refuses_the_token_at_once_everywhere_and_a_second_revoke_is_404(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=50)
    lease_id = (await open_lease(client, agent, 5))["lease_id"]
    reported = await client.post("/api/v1/budget/report", headers=agent.headers, json=usage(lease_id, 0.5))
    assert reported.status_code == 204
    revoked = await client.delete(f"/api/v1/agents/{agent.id}/ic-token", headers=admin_headers)
    assert revoked.status_code == 204, revoked.text
    assert revoked.content == b""
    await assert_token_refused_everywhere(client, pool, agent.ic_token, lease_id)
    again = await client.delete(f"/api/v1/agents/{agent.id}/ic-token", headers=admin_headers)
    assert_error(again, 404, "RESOURCE_NOT_FOUND")
    # the agent itself and its money are untouched
    got = await client.get(f"/api/v1/agents/{agent.id}", headers=admin_headers)
    assert got.status_code == 200, got.text
    assert (got.json()["spent"], got.json()["outstanding"]) == (0.5, 4.5)
    await assert_ledger_invariants(pool, agent.id)
    # until a new token is created the agent has none; a regenerated one works
    assert not await pool.fetchval(
        "SELECT count(*) FROM ic_tokens WHERE agent_id = $1 AND revoked_at IS NULL", agent.id
    )
    response = await client.post(f"/api/v1/agents/{agent.id}/ic-token/regenerate", headers=admin_headers)
    assert response.status_code == 200, response.text
    await assert_token_works(client, response.json()["ic_token"]["token"], lease_id)
    still_dead = await client.post("/api/v1/agents/provider-key", headers=agent.headers)
    assert_error(still_dead, 401, "AUTH_INVALID_TOKEN")


async def test_a_token_of_a_deleted_agent_is_refused(
    client: httpx.AsyncClient, pool: asyncpg.Pool, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=5)
    await pool.execute("UPDATE agents SET status = 'deleted' WHERE id = $1", agent.id)
    response = await client.post(
        "/api/v1/budget/handshake", headers=agent.headers, json={"requested_budget": 1}
    )
    assert_error(response, 401, "AUTH_INVALID_TOKEN")
    assert not await pool.fetchval("SELECT count(*) FROM leases WHERE agent_id = $1", agent.id)


# --- the wrong kind of token ----------------------------------------------------------------------


def user_endpoints(agent_id: str, provider_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """One valid admin request to every user-facing endpoint."""
    return [
        (
            "POST",
            "/api/v1/agents",
            {"name": f"a-{secrets.token_hex(3)}", "budget": 1, "providers": [provider_id]},
        ),
        ("GET", f"/api/v1/agents/{agent_id}", None),
        (
            "POST",
            "/api/v1/providers",
            {
                "name": f"p-{secrets.token_hex(3)}",
                "type": "anthropic",
                "endpoint": "https://api.anthropic.example",
                "credentials": {"api_key": "sk-ant-test"},
            },
        ),
        ("PUT", f"/api/v1/limits/agents/{agent_id}/budget", {"budget": 1000}),
        ("GET", f"/api/v1/limits/agents/{agent_id}/budget/history", None),
        ("POST", f"/api/v1/agents/{agent_id}/ic-token/regenerate", None),
        ("DELETE", f"/api/v1/agents/{agent_id}/ic-token", None),
    ]


# --- no token, bad tokens -------------------------------------------------------------------------


async def test_the_token_is_checked_before_the_input(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    """A malformed id or body without a token is 401, not 400 (every route's 401s: the permission matrix)."""
    before = await fingerprint(pool)
    for method, path in (("GET", "/api/v1/agents/not-an-id"), ("POST", "/api/v1/budget/report")):
        assert_error(await client.request(method, path), 401, "AUTH_INVALID_TOKEN")
    assert await fingerprint(pool) == before


def bad_credentials(app: Litestar, admin_id: str) -> list[Any]:
    secret = app.state.settings.jwt_secret
    return [
        pytest.param({"Authorization": "Bearer garbage"}, "AUTH_INVALID_TOKEN", id="garbage"),
        pytest.param({"Authorization": "Bearer "}, "AUTH_INVALID_TOKEN", id="empty-bearer"),
        pytest.param({"Authorization": "Basic YWRtaW46YWRtaW4="}, "AUTH_INVALID_TOKEN", id="basic"),
        pytest.param({"Authorization": "Token abc"}, "AUTH_INVALID_TOKEN", id="other-scheme"),
        pytest.param(bearer(make_jwt("another-secret-" * 4, admin_id)), "AUTH_INVALID_TOKEN", id="foreign"),
        pytest.param(bearer(make_jwt(secret, admin_id, typ="refresh")), "AUTH_INVALID_TOKEN", id="wrong-typ"),
        pytest.param(bearer(make_jwt(secret, ids.new_id(ids.USER))), "AUTH_INVALID_TOKEN", id="unknown-user"),
        pytest.param(
            bearer(
                jwt.encode(
                    {"sub": admin_id, "jti": "j", "typ": "access", "exp": 2**40}, None, algorithm="none"
                )
            ),
            "AUTH_INVALID_TOKEN",
            id="alg-none",
        ),
        pytest.param(bearer(make_jwt(secret, admin_id, expires_in_s=-5)), "AUTH_TOKEN_EXPIRED", id="expired"),
    ]


async def test_bad_bearer_tokens_are_401_on_user_endpoints(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    app: Litestar,
    admin_id: str,
    make_agent: MakeAgent,
    provider_id: str,
) -> None:
    agent = await make_agent(budget=5)
    before = await fingerprint(pool)
    for case in bad_credentials(app, admin_id):
        headers, code = case.values
        for method, path, body in user_endpoints(agent.id, provider_id):
            response = await client.request(method, path, headers=headers, json=body)
            error = assert_error(response, 401, code)
            assert error["code"] == code, (case.id, path)
    assert await fingerprint(pool) == before


async def test_a_well_signed_fresh_jwt_is_accepted(
    client: httpx.AsyncClient, app: Litestar, admin_id: str, make_agent: MakeAgent
) -> None:
    """Control for the bad tokens: the same construction with the right secret and a future expiry works."""
    agent = await make_agent(budget=5)
    token = make_jwt(app.state.settings.jwt_secret, admin_id)
    response = await client.get(f"/api/v1/agents/{agent.id}", headers=bearer(token))
    assert response.status_code == 200, response.text


async def test_bad_bearer_tokens_are_401_on_the_budget_protocol(
    client: httpx.AsyncClient, pool: asyncpg.Pool, app: Litestar, admin_id: str, make_agent: MakeAgent
) -> None:
    agent = await make_agent(budget=5)
    lease_id = (await open_lease(client, agent, 1))["lease_id"]
    before = await fingerprint(pool)
    forged_ic = "ic_" + secrets.token_urlsafe(32)
    for headers in [*(case.values[0] for case in bad_credentials(app, admin_id)), bearer(forged_ic)]:
        for path, body in protocol_calls(lease_id):
            response = await client.post(path, headers=headers, json=body)
            assert_error(response, 401, "AUTH_INVALID_TOKEN")
    assert await fingerprint(pool) == before


async def test_a_suspended_users_token_stops_working_at_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    person = await make_person(client, pool, "user")
    created = await client.post("/api/v1/agents", headers=person.headers, json={"name": "mine", "budget": 1})
    assert created.status_code == 201, created.text
    await pool.execute("UPDATE users SET status = 'suspended' WHERE id = $1", person.id)
    response = await client.get(f"/api/v1/agents/{created.json()['id']}", headers=person.headers)
    assert_error(response, 401, "AUTH_INVALID_TOKEN")
    relogin = await client.post(
        "/api/v1/auth/login", json={"email": person.email, "password": person.password}
    )
    assert_error(relogin, 403, "AUTH_ACCOUNT_SUSPENDED")


# --- login ----------------------------------------------------------------------------------------


async def test_login_returns_the_contract_shape(
    client: httpx.AsyncClient, pool: asyncpg.Pool, app: Litestar, admin_id: str
) -> None:
    response = await client.post(
        "/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"user_token", "token_type", "expires_in", "expires_at", "refresh_token", "user"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == app.state.settings.access_token_ttl_s
    assert body["expires_at"].endswith("Z")
    assert body["refresh_token"]
    assert body["refresh_token"] != body["user_token"]
    assert set(body["user"]) == {"id", "email", "role", "name"}
    assert body["user"] == {
        "id": admin_id,
        "email": ADMIN_EMAIL,
        "role": "admin",
        "name": body["user"]["name"],
    }
    password_hash = await pool.fetchval("SELECT password_hash FROM users WHERE id = $1", admin_id)
    assert password_hash not in response.text
    assert "$argon2" not in response.text
    assert "password" not in response.text
    # the token is a working user token
    claims = jwt.decode(body["user_token"], app.state.settings.jwt_secret, algorithms=["HS256"])
    assert claims["sub"] == admin_id
    assert abs(claims["exp"] - claims["iat"] - body["expires_in"]) <= 1


async def test_wrong_password_and_unknown_email_are_indistinguishable(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    before = await pool.fetchval("SELECT count(*) FROM refresh_tokens")
    wrong_password = await client.post(
        "/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD + "!"}
    )
    unknown_email = await client.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": ADMIN_PASSWORD}
    )
    first = assert_error(wrong_password, 401, "AUTH_INVALID_CREDENTIALS")
    second = assert_error(unknown_email, 401, "AUTH_INVALID_CREDENTIALS")
    assert first["message"] == second["message"]
    assert set(first) == set(second)
    assert "details" not in first
    assert "fields" not in first
    for response in (wrong_password, unknown_email):
        assert "$argon2" not in response.text
        assert ADMIN_PASSWORD not in response.text
    assert await pool.fetchval("SELECT count(*) FROM refresh_tokens") == before


# --- roles ----------------------------------------------------------------------------------------


async def test_a_user_manages_only_their_own_agents(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    roles: Roles,
    admin_headers: dict[str, str],
    provider_id: str,
) -> None:
    created = await client.post(
        "/api/v1/agents",
        headers=roles.owner.headers,
        json={"name": "dev-agent", "budget": 3, "providers": [provider_id]},
    )
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["owner_id"] == roles.owner.id
    assert agent["ic_token"]["token"].startswith("ic_")
    path = f"/api/v1/agents/{agent['id']}"
    mine = await client.get(path, headers=roles.owner.headers)
    assert mine.status_code == 200, mine.text
    assert "ic_token" not in mine.json()  # the value is shown once, at creation
    assert (await client.get(path, headers=admin_headers)).status_code == 200
    for stranger in (roles.other, roles.viewer):
        assert_error(await client.get(path, headers=stranger.headers), 404, "RESOURCE_NOT_FOUND")
    # the other user can neither rotate nor revoke this agent's token: 404, and it keeps working
    before = await fingerprint(pool)
    for stranger in (roles.other, roles.viewer):
        rotate = await client.post(f"{path}/ic-token/regenerate", headers=stranger.headers)
        assert_error(rotate, 404, "RESOURCE_NOT_FOUND")
        revoke = await client.delete(f"{path}/ic-token", headers=stranger.headers)
        assert_error(revoke, 404, "RESOURCE_NOT_FOUND")
    assert await fingerprint(pool) == before
    works = await client.post("/api/v1/agents/provider-key", headers=bearer(agent["ic_token"]["token"]))
    assert works.status_code == 200, works.text
    # the owner can rotate their own agent's token
    rotated = await client.post(f"{path}/ic-token/regenerate", headers=roles.owner.headers)
    assert rotated.status_code == 200, rotated.text
    stale = await client.post("/api/v1/agents/provider-key", headers=bearer(agent["ic_token"]["token"]))
    assert_error(stale, 401, "AUTH_INVALID_TOKEN")


async def test_a_viewer_cannot_create_agents(
    client: httpx.AsyncClient, pool: asyncpg.Pool, roles: Roles
) -> None:
    before = await fingerprint(pool)
    response = await client.post(
        "/api/v1/agents", headers=roles.viewer.headers, json={"name": "v", "budget": 1}
    )
    assert_error(response, 403, "PERMISSION_DENIED")
    assert await fingerprint(pool) == before


async def test_only_admins_create_providers_and_set_budgets(
    client: httpx.AsyncClient, pool: asyncpg.Pool, roles: Roles, admin_headers: dict[str, str]
) -> None:
    own = await client.post(
        "/api/v1/agents", headers=roles.owner.headers, json={"name": "budgeted", "budget": 2}
    )
    assert own.status_code == 201, own.text
    agent_id = own.json()["id"]
    provider = {
        "name": f"user-made-{secrets.token_hex(3)}",
        "type": "openai",
        "endpoint": "https://api.example.com",
        "credentials": {"api_key": "sk-user-made"},
    }
    before = await fingerprint(pool)
    for person in (roles.owner, roles.viewer):
        created = await client.post("/api/v1/providers", headers=person.headers, json=provider)
        assert_error(created, 403, "PERMISSION_DENIED")
        # not even on the user's own agent
        raised = await client.put(
            f"/api/v1/limits/agents/{agent_id}/budget", headers=person.headers, json={"budget": 1000}
        )
        assert_error(raised, 403, "PERMISSION_DENIED")
        history = await client.get(f"/api/v1/limits/agents/{agent_id}/budget/history", headers=person.headers)
        assert_error(history, 403, "PERMISSION_DENIED")
    assert await fingerprint(pool) == before
    got = await client.get(f"/api/v1/agents/{agent_id}", headers=roles.owner.headers)
    assert got.json()["budget"] == 2.0
    # the admin can do both
    raised = await client.put(
        f"/api/v1/limits/agents/{agent_id}/budget", headers=admin_headers, json={"budget": 9}
    )
    assert raised.status_code == 200, raised.text
    assert (await client.get(f"/api/v1/agents/{agent_id}", headers=roles.owner.headers)).json()[
        "budget"
    ] == 9.0


# --- provider keys --------------------------------------------------------------------------------


async def test_provider_keys_are_stored_sealed_and_never_returned_by_the_admin_api(
    client: httpx.AsyncClient, pool: asyncpg.Pool, app: Litestar, admin_headers: dict[str, str]
) -> None:
    key = f"sk-secret-{secrets.token_hex(16)}"
    request = provider_body(key=key)
    response = await client.post("/api/v1/providers", headers=admin_headers, json=request)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["credentials_configured"] is True
    assert set(body) >= {"id", "name", "type", "endpoint", "models", "status", "created_at", "updated_at"}
    assert "credentials" not in body
    assert key not in response.text
    assert key[:14] not in response.text
    # a second create with the same name is a conflict, and does not echo the key either
    clash = await client.post("/api/v1/providers", headers=admin_headers, json=request)
    assert_error(clash, 409, "RESOURCE_CONFLICT")
    assert key not in clash.text
    # an agent's view of its providers shows ids, never the key
    agent = await client.post(
        "/api/v1/agents",
        headers=admin_headers,
        json={"name": "sealed-user", "budget": 1, "providers": [body["id"]]},
    )
    assert agent.status_code == 201, agent.text
    assert key not in agent.text
    assert key not in (await client.get(f"/api/v1/agents/{agent.json()['id']}", headers=admin_headers)).text
    # at rest: ciphertext, not the key; it opens only with the master key and this provider's id
    stored = bytes(await pool.fetchval("SELECT key_ciphertext FROM providers WHERE id = $1", body["id"]))
    assert key.encode() not in stored
    assert len(stored) >= len(key) + 12 + 16  # nonce + ciphertext + tag
    assert unseal(app.state.settings.master_key, stored, body["id"].encode()) == key.encode()
    with pytest.raises(InvalidTag):
        unseal(app.state.settings.master_key, stored, ids.new_id(ids.PROVIDER).encode())
    # the key reaches only the agent, over the budget protocol
    agent_key = await client.post(
        "/api/v1/agents/provider-key", headers=bearer(agent.json()["ic_token"]["token"])
    )
    assert agent_key.json()["api_key"] == key
