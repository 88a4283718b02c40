"""Sessions, end to end on the real application (and on two real control-plane processes):

- refresh rotates: the used refresh token is spent, and presenting it again ends the session;
- logout refuses the token at once on every endpoint and every replica, and ends its session;
- validate answers ``{valid, ...}`` for every kind of token, never an error for a bad one;
- login throttling per client IP (only failures count) and account lockout after 10 failures.

Every test that fails logins does so from a client IP of its own: the throttle is per IP,
and the shared test client's 127.0.0.1 must stay usable for the rest of the session.
"""

import asyncio
import hashlib
import secrets
import time
from datetime import timedelta

import asyncpg
import httpx
import pytest
from litestar import Litestar

from iron import ids
from iron.timefmt import utcnow
from tests.conftest import login
from tests.control_plane.helpers import (
    assert_error,
    bearer,
    client_at,
    create_agent,
    fresh_ip,
    make_jwt,
    make_person,
    start_session,
    sweep_until,
)

CHECK = "/api/v1/agents"  # any endpoint that takes a user token


def sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})


async def assert_accepted(client: httpx.AsyncClient, token: str) -> None:
    response = await client.get(CHECK, headers=bearer(token))
    assert response.status_code == 200, response.text


async def assert_refused(client: httpx.AsyncClient, token: str) -> None:
    assert_error(await client.get(CHECK, headers=bearer(token)), 401, "AUTH_INVALID_TOKEN")


# --- refresh ---------------------------------------------------------------------------------------


async def test_refresh_rotates_and_a_reused_refresh_token_ends_the_session(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    person = await make_person(client, pool, "user")
    first = await start_session(client, person)
    other_session = await start_session(client, person)

    rotated = await refresh(client, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert set(second) == set(first)  # the login shape
    assert second["user"] == first["user"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["user_token"] != first["user_token"]
    await assert_accepted(client, second["user_token"])
    family = await pool.fetch(
        "SELECT token_hash, used_at IS NOT NULL AS used FROM refresh_tokens WHERE family_id ="
        " (SELECT family_id FROM refresh_tokens WHERE token_hash = $1) ORDER BY created_at",
        sha256(first["refresh_token"]),
    )
    assert [(bytes(row["token_hash"]), row["used"]) for row in family] == [
        (sha256(first["refresh_token"]), True),  # spent
        (sha256(second["refresh_token"]), False),  # its successor, in the same family
    ]

    # The spent token again: somebody else holds this session. All of it ends at once.
    reused = await refresh(client, first["refresh_token"])
    assert_error(reused, 401, "AUTH_INVALID_TOKEN")
    assert_error(await refresh(client, second["refresh_token"]), 401, "AUTH_INVALID_TOKEN")
    for token in (first["user_token"], second["user_token"]):
        await assert_refused(client, token)
    # the user's other session is a different family and carries on
    await assert_accepted(client, other_session["user_token"])
    again = await refresh(client, other_session["refresh_token"])
    assert again.status_code == 200, again.text


async def test_two_refreshes_racing_with_one_token_count_as_reuse(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    person = await make_person(client, pool, "user")
    session = await start_session(client, person)
    responses = await asyncio.gather(*(refresh(client, session["refresh_token"]) for _ in range(2)))
    assert sorted(r.status_code for r in responses) == [200, 401]
    winner = next(r.json() for r in responses if r.status_code == 200)
    # the row lock makes the loser see a spent token, so the winner's pair is revoked too
    assert_error(await refresh(client, winner["refresh_token"]), 401, "AUTH_INVALID_TOKEN")
    await assert_refused(client, winner["user_token"])


async def test_refresh_refuses_bad_expired_and_inactive_tokens(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    for body in ({"refresh_token": "rt_" + secrets.token_urlsafe(32)}, {"refresh_token": "garbage"}):
        response = await client.post("/api/v1/auth/refresh", json=body)
        assert_error(response, 401, "AUTH_INVALID_TOKEN")
    error = assert_error(await client.post("/api/v1/auth/refresh", json={}), 400, "VALIDATION_ERROR")
    assert set(error["fields"]) == {"refresh_token"}
    # an access token is not a refresh token
    person = await make_person(client, pool, "user")
    session = await start_session(client, person)
    assert_error(await refresh(client, session["user_token"]), 401, "AUTH_INVALID_TOKEN")

    await pool.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE user_id = $1", person.id
    )
    assert_error(await refresh(client, session["refresh_token"]), 401, "AUTH_TOKEN_EXPIRED")

    suspended = await make_person(client, pool, "user")
    kept = await start_session(client, suspended)
    await pool.execute("UPDATE users SET status = 'suspended' WHERE id = $1", suspended.id)
    assert_error(await refresh(client, kept["refresh_token"]), 401, "AUTH_INVALID_TOKEN")


async def test_the_sweeper_deletes_refresh_tokens_a_day_after_they_died_and_nothing_else(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    person = await make_person(client, pool, "user")
    first = await start_session(client, person)
    rotated = (await refresh(client, first["refresh_token"])).json()  # the first token is used now
    dead = {  # token -> (expires in, revoked ago); the first two died over a day ago
        "expired long ago": (timedelta(days=-2), None),
        "revoked long ago": (timedelta(days=1), timedelta(days=2)),
        "just expired": (timedelta(minutes=-1), None),
        "just revoked": (timedelta(days=1), timedelta(minutes=1)),
    }
    tokens = {name: f"rt_{secrets.token_urlsafe(32)}" for name in dead}

    async def rows() -> set[bytes]:
        found = await pool.fetch("SELECT token_hash FROM refresh_tokens WHERE user_id = $1", person.id)
        return {bytes(row["token_hash"]) for row in found}

    alive = await rows()  # the sessions' tokens, the first one used
    for name, (expires_in, revoked_ago) in dead.items():
        await pool.execute(
            "INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at, revoked_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            sha256(tokens[name]),
            person.id,
            ids.new_id("sess"),
            utcnow() + expires_in,
            utcnow() - revoked_ago if revoked_ago else None,
        )
    kept = alive | {sha256(tokens["just expired"]), sha256(tokens["just revoked"])}

    async def swept() -> bool:
        return await rows() == kept

    await sweep_until(pool, swept)
    assert await rows() == kept
    # what stays answers as before; what went is unknown
    assert_error(await refresh(client, tokens["just expired"]), 401, "AUTH_TOKEN_EXPIRED")
    assert_error(await refresh(client, tokens["expired long ago"]), 401, "AUTH_INVALID_TOKEN")
    assert (await refresh(client, rotated["refresh_token"])).status_code == 200
    reused = await refresh(client, first["refresh_token"])  # a used token still reveals reuse
    assert_error(reused, 401, "AUTH_INVALID_TOKEN")
    assert "already used" in reused.json()["error"]["message"]


# --- logout ----------------------------------------------------------------------------------------


async def test_logout_refuses_the_token_at_once_and_ends_its_session_only(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    person = await make_person(client, pool, "user")
    session = await start_session(client, person)
    other = await start_session(client, person)
    older = session["user_token"]
    rotated = (await refresh(client, session["refresh_token"])).json()
    await assert_accepted(client, older)  # rotation alone leaves the older access token valid

    response = await client.post("/api/v1/auth/logout", headers=bearer(rotated["user_token"]))
    assert response.status_code == 204, response.text
    assert response.content == b""
    await assert_refused(client, rotated["user_token"])
    await assert_refused(client, older)  # same session
    assert_error(await refresh(client, rotated["refresh_token"]), 401, "AUTH_INVALID_TOKEN")
    again = await client.post("/api/v1/auth/logout", headers=bearer(rotated["user_token"]))
    assert_error(again, 401, "AUTH_INVALID_TOKEN")
    # another device's session is untouched
    await assert_accepted(client, other["user_token"])
    assert (await refresh(client, other["refresh_token"])).status_code == 200
    assert_error(await client.post("/api/v1/auth/logout"), 401, "AUTH_INVALID_TOKEN")


@pytest.mark.slow
async def test_logout_holds_on_every_replica(
    client: httpx.AsyncClient, pool: asyncpg.Pool, control_plane_processes: list[str]
) -> None:
    person = await make_person(client, pool, "user")
    first, second = control_plane_processes
    async with httpx.AsyncClient(base_url=first) as one, httpx.AsyncClient(base_url=second) as two:
        session = await start_session(one, person)
        token = session["user_token"]
        for replica in (one, two, client):
            await assert_accepted(replica, token)
        response = await one.post("/api/v1/auth/logout", headers=bearer(token))
        assert response.status_code == 204, response.text
        for replica in (two, one, client):  # the other replica first: no cache to hide behind
            await assert_refused(replica, token)
        assert_error(await refresh(two, session["refresh_token"]), 401, "AUTH_INVALID_TOKEN")


async def test_logout_with_an_api_token_is_refused_and_the_token_keeps_working(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    person = await make_person(client, pool, "user")
    created = await client.post("/api/v1/api-tokens", headers=person.headers, json={"name": "ci"})
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    error = assert_error(
        await client.post("/api/v1/auth/logout", headers=bearer(token)), 400, "VALIDATION_ERROR"
    )
    assert set(error["fields"]) == {"authorization"}
    await assert_accepted(client, token)


# --- validate --------------------------------------------------------------------------------------


async def test_validate_tells_good_tokens_from_bad_ones(
    client: httpx.AsyncClient, pool: asyncpg.Pool, app: Litestar
) -> None:
    person = await make_person(client, pool, "viewer")
    session = await start_session(client, person)
    summary = {"id": person.id, "email": person.email, "role": "viewer", "name": "Test viewer"}
    by_header = await client.post("/api/v1/auth/validate", headers=bearer(session["user_token"]))
    assert by_header.status_code == 200, by_header.text
    assert by_header.json() == {"valid": True, "user": summary, "expires_at": session["expires_at"]}
    by_body = await client.post("/api/v1/auth/validate", json={"token": session["user_token"]})
    assert by_body.json() == by_header.json()

    api = await client.post("/api/v1/api-tokens", headers=person.headers, json={"name": "v"})
    assert api.status_code == 201, api.text
    api_valid = (await client.post("/api/v1/auth/validate", json={"token": api.json()["token"]})).json()
    assert api_valid == {"valid": True, "user": summary}  # no expiry: none was set

    ic_token = (await create_agent(client, (await make_person(client, pool, "user")).headers, 1)).ic_token
    secret = app.state.settings.jwt_secret
    bad = [
        "garbage",
        "ü" * 50,
        "x" * 4096,
        "apitok_" + secrets.token_urlsafe(32),
        "rt_" + secrets.token_urlsafe(32),
        ic_token,  # valid, but not a user token
        make_jwt(secret, person.id, expires_in_s=-5),
        make_jwt(secret, ids.new_id(ids.USER)),
        make_jwt("another-secret-" * 4, person.id),
    ]
    for token in bad:
        response = await client.post("/api/v1/auth/validate", json={"token": token})
        assert response.status_code == 200, (token[:20], response.text)
        assert response.json() == {"valid": False}
    logged_out = await client.post("/api/v1/auth/logout", headers=bearer(session["user_token"]))
    assert logged_out.status_code == 204
    after = await client.post("/api/v1/auth/validate", json={"token": session["user_token"]})
    assert after.json() == {"valid": False}

    for body in ({}, {"token": None}):
        error = assert_error(await client.post("/api/v1/auth/validate", json=body), 400, "VALIDATION_ERROR")
        assert set(error["fields"]) == {"token"}
    malformed = await client.post("/api/v1/auth/validate", content=b"{bad")
    assert_error(malformed, 400, "VALIDATION_ERROR")
    too_long = await client.post("/api/v1/auth/validate", json={"token": "x" * 4097})
    assert_error(too_long, 400, "VALIDATION_ERROR")


# --- throttling and lockout ------------------------------------------------------------------------


async def attempt(http: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await http.post("/api/v1/auth/login", json={"email": email, "password": password})


async def guess_from_many_ips(app: Litestar, email: str, times: int) -> None:
    """Wrong passwords, all at once, each from an address of its own (as a botnet would):
    the account's count must not lose any of them."""

    async def guess() -> None:
        async with client_at(app, fresh_ip()) as guesser:
            assert_error(await attempt(guesser, email, "guess"), 401, "AUTH_INVALID_CREDENTIALS")

    await asyncio.gather(*(guess() for _ in range(times)))


async def test_the_sixth_failed_login_from_an_ip_is_429_and_other_ips_are_unaffected(
    client: httpx.AsyncClient, pool: asyncpg.Pool, app: Litestar
) -> None:
    person = await make_person(client, pool, "user")
    ip = fresh_ip()
    async with client_at(app, ip) as attacker, client_at(app, fresh_ip()) as neighbour:
        for failures in range(1, 6):
            response = await attempt(attacker, person.email, "wrong password")
            assert_error(response, 401, "AUTH_INVALID_CREDENTIALS")
            assert response.headers["x-ratelimit-limit"] == "5"
            assert response.headers["x-ratelimit-remaining"] == str(5 - failures)
        before = time.time()
        refused = await attempt(attacker, person.email, person.password)  # even the right password
        error = assert_error(refused, 429, "RATE_LIMIT_EXCEEDED")
        assert refused.headers["x-ratelimit-limit"] == "5"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert 0 < int(refused.headers["retry-after"]) <= 300
        assert before < int(refused.headers["x-ratelimit-reset"]) <= before + 301
        assert error["details"]["limit"] == 5
        assert error["details"]["window_seconds"] == 300
        assert "refresh_token" not in refused.text
        # unknown emails count the same, and being refused does not extend the window
        assert_error(await attempt(attacker, "nobody@example.com", "x"), 429, "RATE_LIMIT_EXCEEDED")

        ok = await attempt(neighbour, person.email, person.password)
        assert ok.status_code == 200, ok.text
        assert ok.headers["x-ratelimit-remaining"] == "5"
        wrong = await attempt(neighbour, person.email, "wrong password")
        assert wrong.headers["x-ratelimit-remaining"] == "4"
        assert (await attempt(client, person.email, person.password)).status_code == 200

        # the window ends (made to end now, rather than waiting five minutes)
        await app.state.redis.pexpire(f"iron:login-failures:{ip}", 1)
        await asyncio.sleep(0.05)
        assert (await attempt(attacker, person.email, person.password)).status_code == 200


async def test_guesses_sent_all_at_once_from_one_ip_get_no_more_than_five_answers(
    client: httpx.AsyncClient, pool: asyncpg.Pool, app: Litestar
) -> None:
    person = await make_person(client, pool, "user")
    async with client_at(app, fresh_ip()) as attacker:
        responses = await asyncio.gather(*(attempt(attacker, person.email, f"guess-{n}") for n in range(12)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [401] * 5 + [429] * 7, statuses


async def test_successful_logins_are_not_throttled(
    client: httpx.AsyncClient, pool: asyncpg.Pool, app: Litestar
) -> None:
    person = await make_person(client, pool, "user")
    async with client_at(app, fresh_ip()) as office:
        for _ in range(8):
            response = await attempt(office, person.email, person.password)
            assert response.status_code == 200, response.text
            assert response.headers["x-ratelimit-remaining"] == "5"


async def test_ten_consecutive_failures_lock_the_account_for_fifteen_minutes(
    client: httpx.AsyncClient, pool: asyncpg.Pool, app: Litestar
) -> None:
    person, admin = await make_person(client, pool, "user"), await make_person(client, pool, "admin")
    session = await start_session(client, person)
    await guess_from_many_ips(app, person.email, 10)
    locked_until = await pool.fetchval("SELECT locked_until FROM users WHERE id = $1", person.id)
    assert locked_until is not None
    assert abs((locked_until - utcnow()) - timedelta(minutes=15)) < timedelta(seconds=30)

    async with client_at(app, fresh_ip()) as owner:
        refused = await attempt(owner, person.email, person.password)
        error = assert_error(refused, 403, "AUTH_ACCOUNT_LOCKED")
        assert 840 <= int(refused.headers["retry-after"]) <= 900
        assert error["details"]["locked_until"].endswith("Z")
        # a wrong password does not learn of the lock, and does not extend it
        assert_error(await attempt(owner, person.email, "guess"), 401, "AUTH_INVALID_CREDENTIALS")
        assert await pool.fetchval("SELECT locked_until FROM users WHERE id = $1", person.id) == locked_until
        # the lock is on logins: a session opened before it carries on
        await assert_accepted(client, session["user_token"])

        # an admin lifts it; the user is shown as locked until then
        shown = (await client.get(f"/api/v1/users/{person.id}", headers=admin.headers)).json()
        assert shown["locked_until"].endswith("Z")
        activated = await client.put(f"/api/v1/users/{person.id}/activate", headers=admin.headers)
        assert activated.status_code == 200, activated.text
        assert "locked_until" not in activated.json()
        assert (await attempt(owner, person.email, person.password)).status_code == 200


async def test_a_lock_ends_by_itself_and_a_success_resets_the_count(
    client: httpx.AsyncClient, pool: asyncpg.Pool, app: Litestar
) -> None:
    person = await make_person(client, pool, "user")
    await guess_from_many_ips(app, person.email, 9)
    assert (await attempt(client, person.email, person.password)).status_code == 200
    await guess_from_many_ips(app, person.email, 9)  # 9 + 9 failures, but never 10 in a row
    assert (await attempt(client, person.email, person.password)).status_code == 200
    await guess_from_many_ips(app, person.email, 10)
    async with client_at(app, fresh_ip()) as owner:
        assert_error(await attempt(owner, person.email, person.password), 403, "AUTH_ACCOUNT_LOCKED")
    await pool.execute(
        "UPDATE users SET locked_until = now() - interval '1 second' WHERE id = $1", person.id
    )  # fifteen minutes later
    assert (await login(client, person.email, person.password))["Authorization"].startswith("Bearer ")
