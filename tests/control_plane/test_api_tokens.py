"""API tokens, end to end on the real application:

- the value (``apitok_...``) is shown once, only its SHA-256 is stored, and it works as a Bearer
  wherever a user token does, with exactly its user's rights;
- rotate gives a new value and refuses the old one at once; revoke refuses the token at once;
- users see and manage their own tokens, admins see everyone's (``user_id`` filter) and revoke any;
- each mutation writes exactly one audit entry, with no token value in it;
- the list contract: empty, page past the end, every invalid parameter reported at once.
"""

import hashlib
import json
from typing import Any

import asyncpg
import httpx

from iron import ids
from tests.control_plane.helpers import Person, assert_error, assert_one_audit, bearer, make_person

TOKEN_FIELDS = {"id", "name", "user_id", "status", "created_at"}


async def create(client: httpx.AsyncClient, person: Person, name: str = "ci", **extra: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/api-tokens", headers=person.headers, json={"name": name, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_value_is_shown_once_stored_hashed_and_works_as_a_bearer(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    person = await make_person(client, pool, "user")
    response = await client.post("/api/v1/api-tokens", headers=person.headers, json={"name": "deploy bot"})
    assert response.status_code == 201, response.text
    token = response.json()
    assert set(token) == TOKEN_FIELDS | {"token"}
    assert ids.is_valid(ids.API_TOKEN, token["id"])
    assert token["token"].startswith("apitok_")
    assert len(token["token"]) >= 40
    assert (token["name"], token["user_id"], token["status"]) == ("deploy bot", person.id, "active")
    entry = await assert_one_audit(pool, response, "API_TOKEN_CREATED", token["id"], token["token"])
    assert (entry["resource_type"], entry["resource_id"], entry["user_id"]) == (
        "api_token",
        token["id"],
        person.id,
    )

    stored = await pool.fetchrow("SELECT *, t::text AS text FROM api_tokens t WHERE id = $1", token["id"])
    assert bytes(stored["token_hash"]) == hashlib.sha256(token["token"].encode()).digest()
    assert token["token"] not in stored["text"]
    assert token["token"].removeprefix("apitok_") not in stored["text"]

    mine = await client.post("/api/v1/agents", headers=person.headers, json={"name": "own", "budget": 1})
    assert mine.status_code == 201, mine.text
    listed = await client.get("/api/v1/agents", headers=bearer(token["token"]))
    assert listed.status_code == 200, listed.text
    assert [a["id"] for a in listed.json()["data"]] == [mine.json()["id"]]  # the user's view, exactly

    got = await client.get(f"/api/v1/api-tokens/{token['id']}", headers=person.headers)
    assert got.status_code == 200, got.text
    assert "token" not in got.json()
    assert got.json()["last_used_at"].endswith("Z")  # it was just used
    assert token["token"] not in got.text
    every = await client.get("/api/v1/api-tokens", headers=bearer(token["token"]))
    assert token["token"] not in every.text
    assert [t["id"] for t in every.json()["data"]] == [token["id"]]


async def test_a_token_carries_exactly_its_users_rights(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    viewer, admin = await make_person(client, pool, "viewer"), await make_person(client, pool, "admin")
    viewer_token = bearer((await create(client, viewer))["token"])
    admin_token = bearer((await create(client, admin))["token"])
    refused = await client.post("/api/v1/agents", headers=viewer_token, json={"name": "no", "budget": 1})
    assert_error(refused, 403, "PERMISSION_DENIED")
    assert_error(await client.get("/api/v1/users", headers=viewer_token), 403, "PERMISSION_DENIED")
    created = await client.post("/api/v1/agents", headers=admin_token, json={"name": "a", "budget": 1})
    assert created.status_code == 201, created.text
    path = f"/api/v1/agents/{created.json()['id']}"
    assert_error(await client.get(path, headers=viewer_token), 404, "RESOURCE_NOT_FOUND")
    assert (await client.get(path, headers=admin_token)).status_code == 200
    assert (await client.get("/api/v1/users", headers=admin_token)).status_code == 200


async def test_rotate_gives_a_new_value_and_refuses_the_old_one_at_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    person = await make_person(client, pool, "user")
    token = await create(client, person, expires_in_days=30)
    response = await client.post(f"/api/v1/api-tokens/{token['id']}/rotate", headers=person.headers)
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["token"].startswith("apitok_")
    assert rotated["token"] != token["token"]
    assert {k: v for k, v in rotated.items() if k != "token"} == {
        k: v for k, v in token.items() if k != "token"
    }
    await assert_one_audit(pool, response, "API_TOKEN_ROTATED", token["id"], rotated["token"], token["token"])
    assert_error(
        await client.get("/api/v1/agents", headers=bearer(token["token"])), 401, "AUTH_INVALID_TOKEN"
    )
    assert (await client.get("/api/v1/agents", headers=bearer(rotated["token"]))).status_code == 200

    # another user cannot see it; an admin can, but may not take a working value of it
    stranger, admin = await make_person(client, pool, "user"), await make_person(client, pool, "admin")
    denied = await client.post(f"/api/v1/api-tokens/{token['id']}/rotate", headers=stranger.headers)
    assert_error(denied, 404, "RESOURCE_NOT_FOUND")
    denied = await client.post(f"/api/v1/api-tokens/{token['id']}/rotate", headers=admin.headers)
    assert_error(denied, 403, "PERMISSION_DENIED")
    assert (await client.get("/api/v1/agents", headers=bearer(rotated["token"]))).status_code == 200

    revoked = await client.delete(f"/api/v1/api-tokens/{token['id']}", headers=person.headers)
    assert revoked.status_code == 204
    dead = await client.post(f"/api/v1/api-tokens/{token['id']}/rotate", headers=person.headers)
    assert_error(dead, 409, "RESOURCE_CONFLICT")
    assert_error(
        await client.get("/api/v1/agents", headers=bearer(rotated["token"])), 401, "AUTH_INVALID_TOKEN"
    )


async def test_revoke_refuses_the_token_at_once_and_keeps_it_listed(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    person, stranger = await make_person(client, pool, "user"), await make_person(client, pool, "user")
    token = await create(client, person)
    path = f"/api/v1/api-tokens/{token['id']}"
    assert_error(await client.delete(path, headers=stranger.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(await client.get(path, headers=stranger.headers), 404, "RESOURCE_NOT_FOUND")
    assert (await client.get("/api/v1/agents", headers=bearer(token["token"]))).status_code == 200

    response = await client.delete(path, headers=bearer(token["token"]))  # a token may revoke itself
    assert response.status_code == 204, response.text
    assert response.content == b""
    entry = await assert_one_audit(pool, response, "API_TOKEN_REVOKED", token["id"], token["token"])
    assert json.loads(entry["metadata"]) == {"name": "ci", "user_id": person.id}
    assert_error(
        await client.get("/api/v1/agents", headers=bearer(token["token"])), 401, "AUTH_INVALID_TOKEN"
    )
    shown = (await client.get(path, headers=person.headers)).json()
    assert shown["status"] == "revoked"
    assert shown["revoked_at"].endswith("Z")
    again = await client.delete(path, headers=person.headers)
    assert_error(again, 409, "RESOURCE_CONFLICT")

    # an admin revokes anyone's token
    other = await create(client, stranger)
    admin = await make_person(client, pool, "admin")
    by_admin = await client.delete(f"/api/v1/api-tokens/{other['id']}", headers=admin.headers)
    assert by_admin.status_code == 204, by_admin.text
    entry = await assert_one_audit(pool, by_admin, "API_TOKEN_REVOKED", other["id"], other["token"])
    assert entry["user_id"] == admin.id
    assert_error(
        await client.get("/api/v1/agents", headers=bearer(other["token"])), 401, "AUTH_INVALID_TOKEN"
    )


async def test_an_expired_token_is_refused(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    person = await make_person(client, pool, "user")
    token = await create(client, person, expires_in_days=1)
    assert token["expires_at"].endswith("Z")
    assert (await client.get("/api/v1/agents", headers=bearer(token["token"]))).status_code == 200
    await pool.execute(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1", token["id"]
    )
    assert_error(
        await client.get("/api/v1/agents", headers=bearer(token["token"])), 401, "AUTH_INVALID_TOKEN"
    )
    path = f"/api/v1/api-tokens/{token['id']}"
    assert (await client.get(path, headers=person.headers)).json()["status"] == "expired"
    assert_error(await client.post(f"{path}/rotate", headers=person.headers), 409, "RESOURCE_CONFLICT")


async def test_bad_input_is_reported_field_by_field(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    person = await make_person(client, pool, "user")
    before = await pool.fetchval("SELECT count(*) FROM api_tokens")
    bad = await client.post("/api/v1/api-tokens", headers=person.headers, json={"expires_in_days": 0})
    assert set(assert_error(bad, 400, "VALIDATION_ERROR")["fields"]) == {"name", "expires_in_days"}
    long = await client.post("/api/v1/api-tokens", headers=person.headers, json={"name": "x" * 101})
    assert set(assert_error(long, 400, "VALIDATION_ERROR")["fields"]) == {"name"}
    assert await pool.fetchval("SELECT count(*) FROM api_tokens") == before
    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/rotate")):
        malformed = await client.request(
            method, f"/api/v1/api-tokens/at_nope{suffix}", headers=person.headers
        )
        assert set(assert_error(malformed, 400, "VALIDATION_ERROR")["fields"]) == {"token_id"}
        unknown = await client.request(
            method, f"/api/v1/api-tokens/{ids.new_id(ids.API_TOKEN)}{suffix}", headers=person.headers
        )
        assert_error(unknown, 404, "RESOURCE_NOT_FOUND")
    assert_error(await client.post("/api/v1/api-tokens", json={"name": "x"}), 401, "AUTH_INVALID_TOKEN")


async def test_lists_are_scoped_filtered_and_paged(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    person, other = await make_person(client, pool, "user"), await make_person(client, pool, "user")
    admin = await make_person(client, pool, "admin")
    empty = await client.get("/api/v1/api-tokens", headers=person.headers)
    assert empty.json() == {
        "data": [],
        "pagination": {"page": 1, "per_page": 50, "total": 0, "total_pages": 0},
    }

    made = [await create(client, person, name) for name in ("beta", "alpha", "Gamma")]
    theirs = await create(client, other, "alpha")
    revoked = await client.delete(f"/api/v1/api-tokens/{made[0]['id']}", headers=person.headers)
    assert revoked.status_code == 204

    async def listed(headers: dict[str, str], query: str = "") -> dict[str, Any]:
        response = await client.get(f"/api/v1/api-tokens?{query}", headers=headers)
        assert response.status_code == 200, response.text
        assert "apitok_" not in response.text
        body: dict[str, Any] = response.json()
        return body

    own = await listed(person.headers, "sort=name")
    assert [t["name"] for t in own["data"]] == ["alpha", "beta", "Gamma"]
    assert own["pagination"]["total"] == 3
    assert [t["id"] for t in (await listed(person.headers, "status=active&sort=-name"))["data"]] == [
        made[2]["id"],
        made[1]["id"],
    ]
    assert [t["id"] for t in (await listed(person.headers, "status=revoked"))["data"]] == [made[0]["id"]]
    assert [t["id"] for t in (await listed(person.headers, "search=GAM"))["data"]] == [made[2]["id"]]
    page = await listed(person.headers, "sort=created_at&per_page=2&page=2")
    assert [t["id"] for t in page["data"]] == [made[2]["id"]]
    assert page["pagination"] == {"page": 2, "per_page": 2, "total": 3, "total_pages": 2}
    past = await listed(person.headers, "page=5")
    assert past["data"] == []
    assert past["pagination"]["total"] == 3
    # a user sees only their own, whatever user_id they ask for
    assert (await listed(person.headers, f"user_id={other.id}"))["data"] == []
    assert [t["id"] for t in (await listed(other.headers))["data"]] == [theirs["id"]]
    # an admin sees everyone's, and filters by user
    by_user = await listed(admin.headers, f"user_id={person.id}&sort=name")
    assert [t["id"] for t in by_user["data"]] == [made[1]["id"], made[0]["id"], made[2]["id"]]
    everyone = await listed(admin.headers, "search=alpha&per_page=100")
    assert {theirs["id"], made[1]["id"]} <= {t["id"] for t in everyone["data"]}
    got = await client.get(f"/api/v1/api-tokens/{theirs['id']}", headers=admin.headers)
    assert got.status_code == 200

    cases: list[tuple[str, set[str]]] = [
        ("page=0&per_page=500", {"page", "per_page"}),
        ("status=gone&user_id=nope&sort=token_hash", {"status", "user_id", "sort"}),
        ("search=" + "y" * 201 + "&sort=-x", {"search", "sort"}),
    ]
    for query, fields in cases:
        response = await client.get(f"/api/v1/api-tokens?{query}", headers=person.headers)
        error = assert_error(response, 400, "VALIDATION_ERROR")
        assert set(error["fields"]) == fields, (query, error)
