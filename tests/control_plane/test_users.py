"""User management (admin only), end to end on the real application:

- create (chosen or generated password), list (filters, search, sort, paging), get;
- suspend stops the user's JWT and API token at once; activate lets them back in;
- a role change holds from the next request; nobody demotes, suspends or deletes themselves,
  and the last active admin stays (checked on a database of its own, with two admins racing);
- delete is soft: agents go to the acting admin, pending requests are cancelled, API tokens
  revoked, the email is free again;
- reset password refuses the old one and ends the user's sessions;
- each mutation writes exactly one audit entry, with no password or token in it.
"""

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
from litestar import Litestar

from control_plane.app import create_app
from control_plane.settings import Settings
from control_plane.users import repository as users_repository
from iron import ids
from iron.embedded import ServiceUrls, scratch_database
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, login, until_lock_waiters
from tests.control_plane.helpers import (
    Person,
    assert_error,
    assert_one_audit,
    audit_entries,
    bearer,
    client_at,
    create_agent,
    fingerprint,
    fresh_ip,
    make_person,
    start_session,
)

USER_FIELDS = {"id", "email", "name", "role", "status", "created_at", "updated_at"}


async def new_user(
    client: httpx.AsyncClient, admin_headers: dict[str, str], role: str = "user"
) -> tuple[dict[str, Any], str]:
    """A user created through the API with a chosen password; the response body and the password."""
    password = f"pw-{secrets.token_hex(8)}"
    body = {"email": f"u-{secrets.token_hex(4)}@example.com", "name": "New User", "role": role}
    response = await client.post("/api/v1/users", headers=admin_headers, json={**body, "password": password})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created, password


async def person_of(client: httpx.AsyncClient, user: dict[str, Any], password: str) -> Person:
    return Person(user["id"], user["email"], password, await login(client, user["email"], password))


# --- create, get, list -----------------------------------------------------------------------------


async def test_create_with_a_chosen_or_a_generated_password(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    admin = await make_person(client, pool, "admin")
    password = f"chosen-{secrets.token_hex(8)}"
    email = f"Chosen-{secrets.token_hex(4)}@Example.com"
    response = await client.post(
        "/api/v1/users",
        headers=admin.headers,
        json={"email": email, "name": "Chosen", "role": "viewer", "password": password},
    )
    assert response.status_code == 201, response.text
    user = response.json()
    assert set(user) == USER_FIELDS
    assert ids.is_valid(ids.USER, user["id"])
    assert (user["email"], user["name"], user["role"], user["status"]) == (
        email,
        "Chosen",
        "viewer",
        "active",
    )
    assert user["created_at"].endswith("Z")
    assert password not in response.text
    assert "argon2" not in response.text
    entry = await assert_one_audit(pool, response, "USER_CREATED", user["id"], password)
    assert (entry["resource_type"], entry["resource_id"], entry["user_id"]) == ("user", user["id"], admin.id)
    await login(client, email.lower(), password)  # emails match case-insensitively

    generated = await client.post(
        "/api/v1/users",
        headers=admin.headers,
        json={"email": f"g-{secrets.token_hex(4)}@example.com", "name": "G"},
    )
    assert generated.status_code == 201, generated.text
    body = generated.json()
    assert set(body) == USER_FIELDS | {"temporary_password"}
    assert body["role"] == "user"  # the default
    assert len(body["temporary_password"]) >= 20
    await assert_one_audit(pool, generated, "USER_CREATED", body["id"], body["temporary_password"])
    await login(client, body["email"], body["temporary_password"])
    shown = await client.get(f"/api/v1/users/{body['id']}", headers=admin.headers)
    assert "temporary_password" not in shown.json()  # shown once

    before = await fingerprint(pool)
    clash = await client.post(
        "/api/v1/users",
        headers=admin.headers,
        json={"email": email.upper(), "name": "Again", "password": password},
    )
    assert_error(clash, 409, "RESOURCE_CONFLICT")
    bad = await client.post(
        "/api/v1/users",
        headers=admin.headers,
        json={"email": "not-an-email", "name": "", "role": "root", "password": "short"},
    )
    error = assert_error(bad, 400, "VALIDATION_ERROR")
    assert set(error["fields"]) == {"email", "name", "role", "password"}
    assert "short" not in bad.text
    assert await fingerprint(pool) == before


async def test_only_admins_manage_users(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    admin = await make_person(client, pool, "admin")
    target, _ = await new_user(client, admin.headers)
    path = f"/api/v1/users/{target['id']}"
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", {"email": f"x-{secrets.token_hex(4)}@example.com", "name": "X"}),
        ("GET", path, None),
        ("PUT", f"{path}/suspend", None),
        ("PUT", f"{path}/activate", None),
        ("PUT", f"{path}/role", {"role": "admin"}),
        ("POST", f"{path}/reset-password", {}),
        ("DELETE", path, None),
    ]
    people = [await make_person(client, pool, role) for role in ("user", "viewer")]
    agent_headers = (await create_agent(client, people[0].headers, 1)).headers
    before = await fingerprint(pool)
    for method, url, body in calls:
        for person in people:
            response = await client.request(method, url, headers=person.headers, json=body)
            assert_error(response, 403, "PERMISSION_DENIED")
        assert_error(
            await client.request(method, url, headers=agent_headers, json=body), 403, "PERMISSION_DENIED"
        )
        assert_error(await client.request(method, url, json=body), 401, "AUTH_INVALID_TOKEN")
    assert await fingerprint(pool) == before
    assert (await client.get(path, headers=admin.headers)).json()["status"] == "active"


async def test_get_a_user(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    admin = await make_person(client, pool, "admin")
    user, _ = await new_user(client, admin.headers)
    got = await client.get(f"/api/v1/users/{user['id']}", headers=admin.headers)
    assert got.status_code == 200, got.text
    assert got.json() == user
    assert_error(
        await client.get(f"/api/v1/users/{ids.new_id(ids.USER)}", headers=admin.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    malformed = await client.get("/api/v1/users/not-an-id", headers=admin.headers)
    assert set(assert_error(malformed, 400, "VALIDATION_ERROR")["fields"]) == {"user_id"}
    for path in ("suspend", "activate", "role", "reset-password"):
        method = "POST" if path == "reset-password" else "PUT"
        response = await client.request(
            method,
            f"/api/v1/users/{ids.new_id(ids.USER)}/{path}",
            headers=admin.headers,
            json={"role": "user"},
        )
        assert_error(response, 404, "RESOURCE_NOT_FOUND")


async def test_list_users_filters_searches_sorts_and_pages(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    admin = await make_person(client, pool, "admin")
    tag = secrets.token_hex(4)
    made = []
    for n, role in enumerate(("user", "viewer", "user", "admin")):
        response = await client.post(
            "/api/v1/users",
            headers=admin.headers,
            json={"email": f"list-{n}-{tag}@example.com", "name": f"Zed {n} {tag.upper()}", "role": role},
        )
        assert response.status_code == 201, response.text
        made.append(response.json())
    await client.put(f"/api/v1/users/{made[2]['id']}/suspend", headers=admin.headers)

    async def listed(query: str) -> dict[str, Any]:
        response = await client.get(f"/api/v1/users?{query}", headers=admin.headers)
        assert response.status_code == 200, response.text
        assert "password" not in response.text
        body: dict[str, Any] = response.json()
        return body

    everyone = await listed(f"search={tag}&sort=email")
    assert [u["id"] for u in everyone["data"]] == [u["id"] for u in made]
    assert everyone["pagination"] == {"page": 1, "per_page": 50, "total": 4, "total_pages": 1}
    assert all(set(u) == USER_FIELDS for u in everyone["data"])
    by_name = await listed(f"search=zed 2 {tag}")  # in the name only, in any case
    assert [u["id"] for u in by_name["data"]] == [made[2]["id"]]
    users_only = await listed(f"search={tag}&role=user&sort=-created_at")
    assert [u["id"] for u in users_only["data"]] == [made[2]["id"], made[0]["id"]]
    second = await listed(f"search={tag}&sort=-email&per_page=3&page=2")
    assert [u["id"] for u in second["data"]] == [made[0]["id"]]
    assert second["pagination"] == {"page": 2, "per_page": 3, "total": 4, "total_pages": 2}
    assert [u["id"] for u in (await listed(f"search={tag}&status=suspended"))["data"]] == [made[2]["id"]]
    assert [u["role"] for u in (await listed(f"search={tag}&sort=role"))["data"]] == [
        "admin",
        "user",
        "user",
        "viewer",
    ]
    past = await listed(f"search={tag}&page=7")
    assert past == {"data": [], "pagination": {"page": 7, "per_page": 50, "total": 4, "total_pages": 1}}
    nothing = await listed(f"search=nobody-{tag}")
    assert nothing == {"data": [], "pagination": {"page": 1, "per_page": 50, "total": 0, "total_pages": 0}}
    literal = await listed("search=%25")  # a % is taken literally, not as a wildcard
    assert literal["pagination"]["total"] == 0

    deleted = await client.delete(f"/api/v1/users/{made[1]['id']}", headers=admin.headers)
    assert deleted.status_code == 204
    assert (await listed(f"search={tag}"))["pagination"]["total"] == 3

    cases: list[tuple[str, set[str]]] = [
        ("page=0&per_page=101", {"page", "per_page"}),
        ("role=root&status=deleted&sort=password_hash", {"role", "status", "sort"}),
        ("search=" + "x" * 201 + "&page=x", {"search", "page"}),
    ]
    for query, fields in cases:
        error = assert_error(
            await client.get(f"/api/v1/users?{query}", headers=admin.headers), 400, "VALIDATION_ERROR"
        )
        assert set(error["fields"]) == fields, (query, error)


# --- suspend, activate, role --------------------------------------------------------------------------


async def test_suspend_stops_every_token_at_once_and_activate_lets_the_user_back(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    admin = await make_person(client, pool, "admin")
    user, password = await new_user(client, admin.headers)
    person = await person_of(client, user, password)
    session = await start_session(client, person)
    api = await client.post("/api/v1/api-tokens", headers=person.headers, json={"name": "script"})
    api_headers = bearer(api.json()["token"])
    for headers in (person.headers, api_headers):
        assert (await client.get("/api/v1/agents", headers=headers)).status_code == 200

    suspended = await client.put(f"/api/v1/users/{user['id']}/suspend", headers=admin.headers)
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["status"] == "suspended"
    entry = await assert_one_audit(pool, suspended, "USER_SUSPENDED", user["id"])
    assert json.loads(entry["changes"]) == {"before": {"status": "active"}, "after": {"status": "suspended"}}
    for headers in (person.headers, api_headers, bearer(session["user_token"])):
        assert_error(await client.get("/api/v1/agents", headers=headers), 401, "AUTH_INVALID_TOKEN")
    assert_error(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}),
        401,
        "AUTH_INVALID_TOKEN",
    )
    relogin = await client.post("/api/v1/auth/login", json={"email": user["email"], "password": password})
    assert_error(relogin, 403, "AUTH_ACCOUNT_SUSPENDED")
    again = await client.put(f"/api/v1/users/{user['id']}/suspend", headers=admin.headers)
    assert again.status_code == 200  # nothing to change: no mutation, no audit entry
    assert await audit_entries(pool, again) == []

    activated = await client.put(f"/api/v1/users/{user['id']}/activate", headers=admin.headers)
    assert activated.status_code == 200, activated.text
    assert activated.json()["status"] == "active"
    await assert_one_audit(pool, activated, "USER_ACTIVATED", user["id"])
    # the API token was paused, not revoked; the sessions were ended and stay ended
    assert (await client.get("/api/v1/agents", headers=api_headers)).status_code == 200
    for headers in (person.headers, bearer(session["user_token"])):
        assert_error(await client.get("/api/v1/agents", headers=headers), 401, "AUTH_INVALID_TOKEN")
    await login(client, user["email"], password)


async def test_a_role_change_holds_from_the_next_request(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    admin = await make_person(client, pool, "admin")
    user, password = await new_user(client, admin.headers)
    person = await person_of(client, user, password)
    assert_error(await client.get("/api/v1/users", headers=person.headers), 403, "PERMISSION_DENIED")

    promoted = await client.put(
        f"/api/v1/users/{user['id']}/role", headers=admin.headers, json={"role": "admin"}
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["role"] == "admin"
    entry = await assert_one_audit(pool, promoted, "USER_ROLE_CHANGED", user["id"])
    assert json.loads(entry["changes"]) == {"before": {"role": "user"}, "after": {"role": "admin"}}
    assert (await client.get("/api/v1/users", headers=person.headers)).status_code == 200  # same token

    demoted = await client.put(
        f"/api/v1/users/{user['id']}/role", headers=admin.headers, json={"role": "viewer"}
    )
    assert demoted.status_code == 200, demoted.text
    created = await client.post("/api/v1/agents", headers=person.headers, json={"name": "v", "budget": 1})
    assert_error(created, 403, "PERMISSION_DENIED")
    bad = await client.put(f"/api/v1/users/{user['id']}/role", headers=admin.headers, json={"role": "owner"})
    assert set(assert_error(bad, 400, "VALIDATION_ERROR")["fields"]) == {"role"}


async def test_nobody_demotes_suspends_or_deletes_themselves(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    admin = await make_person(client, pool, "admin")
    path = f"/api/v1/users/{admin.id}"
    before = await fingerprint(pool)
    for method, url, body in (
        ("PUT", f"{path}/role", {"role": "user"}),
        ("PUT", f"{path}/suspend", None),
        ("DELETE", path, None),
    ):
        response = await client.request(method, url, headers=admin.headers, json=body)
        assert_error(response, 403, "PERMISSION_DENIED")
        assert await audit_entries(pool, response) == []
    assert await fingerprint(pool) == before
    assert (await client.get(path, headers=admin.headers)).json()["role"] == "admin"
    same = await client.put(f"{path}/role", headers=admin.headers, json={"role": "admin"})
    assert same.status_code == 200  # keeping one's own role is no demotion


@contextlib.asynccontextmanager
async def lone_admin_app(
    service_urls: ServiceUrls, env: dict[str, str]
) -> AsyncIterator[tuple[httpx.AsyncClient, asyncpg.Connection]]:
    """A control plane on a database of its own, where the bootstrap admin is the only admin,
    and a connection of the test's own to that database."""
    async with scratch_database(service_urls.database_url, "iron_test_lone") as url:
        application = create_app(Settings.from_env({**env, "DATABASE_URL": url}))
        async with application.lifespan(), client_at(application, fresh_ip()) as http:
            conn = await asyncpg.connect(url)
            try:
                yield http, conn
            finally:
                await conn.close()


@contextlib.asynccontextmanager
async def admin_changes_held(conn: asyncpg.Connection, waiters: int) -> AsyncIterator[None]:
    """Hold the lock that serialises admin removals; on exit, wait until ``waiters`` other
    transactions queue behind it, then let them go.

    Requests sent inside the block have then all passed their role check before the guard
    decides, so a race is a race every time, not only when the scheduler happens to allow it.
    """
    async with conn.transaction():
        await users_repository.lock_admin_changes(conn)
        yield
        await until_lock_waiters(conn, waiters)


def removal(operation: str, user_id: str) -> dict[str, Any]:
    """The request (``httpx`` arguments) that takes admin rights away from ``user_id``."""
    path = f"/api/v1/users/{user_id}"
    return {
        "demote": {"method": "PUT", "url": f"{path}/role", "json": {"role": "user"}},
        "suspend": {"method": "PUT", "url": f"{path}/suspend"},
        "delete": {"method": "DELETE", "url": path},
    }[operation]


async def test_the_last_active_admin_stays_even_when_two_admins_race(
    service_urls: ServiceUrls, env: dict[str, str]
) -> None:
    async with lone_admin_app(service_urls, env) as (http, conn):
        headers = await login(http, ADMIN_EMAIL, ADMIN_PASSWORD)
        admin_id = (await http.get("/api/v1/users?role=admin", headers=headers)).json()["data"][0]["id"]
        for operation in ("demote", "suspend", "delete"):
            alone = await http.request(**removal(operation, admin_id), headers=headers)
            assert_error(alone, 403, "PERMISSION_DENIED")  # the only admin may not remove itself

            created, password = await new_user(http, headers, "admin")
            other = await login(http, created["email"], password)
            # Each admin removes the other, at once. Both pass the role check; without the
            # guard both would succeed and leave no admin at all.
            async with admin_changes_held(conn, waiters=2):
                racing = [
                    asyncio.create_task(http.request(**removal(operation, created["id"]), headers=headers)),
                    asyncio.create_task(http.request(**removal(operation, admin_id), headers=other)),
                ]
            responses = await asyncio.gather(*racing)
            first_won = responses[0].status_code in (200, 204)
            winner, loser = responses if first_won else responses[::-1]
            assert winner.status_code in (200, 204), winner.text
            assert_error(loser, 409, "RESOURCE_CONFLICT")
            if not first_won:
                headers, admin_id = other, created["id"]
            admins = (await http.get("/api/v1/users?role=admin&status=active", headers=headers)).json()
            assert [u["id"] for u in admins["data"]] == [admin_id]


# --- delete and reset-password --------------------------------------------------------------------


async def test_delete_is_soft_and_hands_everything_over(
    client: httpx.AsyncClient, pool: asyncpg.Pool, app: Litestar
) -> None:
    admin = await make_person(client, pool, "admin")
    user, password = await new_user(client, admin.headers)
    person = await person_of(client, user, password)
    agents = []
    for name in ("one", "two"):
        response = await client.post(
            "/api/v1/agents", headers=person.headers, json={"name": name, "budget": 5}
        )
        assert response.status_code == 201, response.text
        agents.append(response.json()["id"])
    requests = {}
    for status in ("pending", "pending", "approved"):
        request_id = ids.new_id(ids.BUDGET_REQUEST)
        await pool.execute(
            "INSERT INTO budget_requests (id, agent_id, requester_id, current_budget_micros,"
            " requested_budget_micros, justification, status) VALUES ($1, $2, $3, 5000000, 9000000, $4, $5)",
            request_id,
            agents[0],
            user["id"],
            "More budget for the nightly evaluation run",
            status,
        )
        requests[request_id] = status
    api = await client.post("/api/v1/api-tokens", headers=person.headers, json={"name": "ci"})
    api_token = api.json()["token"]

    response = await client.delete(f"/api/v1/users/{user['id']}", headers=admin.headers)
    assert response.status_code == 204, response.text
    assert response.content == b""
    entry = await assert_one_audit(pool, response, "USER_DELETED", user["id"], api_token, password)
    assert json.loads(entry["metadata"]) == {
        "agents_reassigned": 2,
        "agents_reassigned_to": admin.id,
        "budget_requests_cancelled": 2,
        "api_access_revoked": 1,
        "sessions_ended": 1,
    }

    assert await pool.fetchval("SELECT status FROM users WHERE id = $1", user["id"]) == "deleted"
    owners = await pool.fetch("SELECT owner_id FROM agents WHERE id = ANY($1::text[])", agents)
    assert [row["owner_id"] for row in owners] == [admin.id, admin.id]
    statuses = dict(
        await pool.fetch("SELECT id, status FROM budget_requests WHERE id = ANY($1::text[])", list(requests))
    )
    assert statuses == {rid: "cancelled" if was == "pending" else was for rid, was in requests.items()}
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL", user["id"]
        )
        == 0
    )
    for headers in (person.headers, bearer(api_token)):
        assert_error(await client.get("/api/v1/agents", headers=headers), 401, "AUTH_INVALID_TOKEN")
    async with client_at(app, fresh_ip()) as elsewhere:
        gone = await elsewhere.post("/api/v1/auth/login", json={"email": user["email"], "password": password})
        assert_error(gone, 401, "AUTH_INVALID_CREDENTIALS")
    # the admin now holds the agents
    mine = await client.get(f"/api/v1/agents/{agents[0]}", headers=admin.headers)
    assert mine.json()["owner_id"] == admin.id
    # the user is gone from the API, and a second delete finds nothing
    assert_error(
        await client.get(f"/api/v1/users/{user['id']}", headers=admin.headers), 404, "RESOURCE_NOT_FOUND"
    )
    again = await client.delete(f"/api/v1/users/{user['id']}", headers=admin.headers)
    assert_error(again, 404, "RESOURCE_NOT_FOUND")
    # the email is free for a new account
    reused = await client.post(
        "/api/v1/users",
        headers=admin.headers,
        json={"email": user["email"], "name": "Next", "password": password},
    )
    assert reused.status_code == 201, reused.text
    assert reused.json()["id"] != user["id"]


async def test_reset_password_refuses_the_old_one_and_ends_sessions(
    client: httpx.AsyncClient, pool: asyncpg.Pool, app: Litestar
) -> None:
    admin = await make_person(client, pool, "admin")
    user, old_password = await new_user(client, admin.headers)
    person = await person_of(client, user, old_password)
    api = await client.post("/api/v1/api-tokens", headers=person.headers, json={"name": "kept"})
    new_password = f"new-{secrets.token_hex(8)}"
    response = await client.post(
        f"/api/v1/users/{user['id']}/reset-password", headers=admin.headers, json={"password": new_password}
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == USER_FIELDS
    entry = await assert_one_audit(
        pool, response, "USER_PASSWORD_RESET", user["id"], new_password, old_password
    )
    assert json.loads(entry["metadata"]) == {"generated": False, "sessions_ended": 1}

    async with client_at(app, fresh_ip()) as elsewhere:
        old = await elsewhere.post(
            "/api/v1/auth/login", json={"email": user["email"], "password": old_password}
        )
        assert_error(old, 401, "AUTH_INVALID_CREDENTIALS")
    assert_error(await client.get("/api/v1/agents", headers=person.headers), 401, "AUTH_INVALID_TOKEN")
    assert (await client.get("/api/v1/agents", headers=bearer(api.json()["token"]))).status_code == 200
    await login(client, user["email"], new_password)

    generated = await client.post(f"/api/v1/users/{user['id']}/reset-password", headers=admin.headers)
    assert generated.status_code == 200, generated.text
    temporary = generated.json()["temporary_password"]
    await assert_one_audit(pool, generated, "USER_PASSWORD_RESET", user["id"], temporary)
    await login(client, user["email"], temporary)
    short = await client.post(
        f"/api/v1/users/{user['id']}/reset-password", headers=admin.headers, json={"password": "x"}
    )
    assert set(assert_error(short, 400, "VALIDATION_ERROR")["fields"]) == {"password"}
