"""What the control-plane tests share: people of each role, resources, tokens, the error
envelope, table fingerprints and the audit entries of one request."""

import asyncio
import contextlib
import secrets
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import jwt
from litestar import Litestar
from litestar.routes import HTTPRoute

from control_plane.auth.secrets import hash_password
from control_plane.budget.sweeper import run_sweeper
from control_plane.lib.pagination import Page
from iron import ids
from iron.timefmt import utcnow
from tests.conftest import FAKE_PROVIDER_KEY, AgentHandle, login, provider_body
from tests.ledger_checks import ALL_TABLES

# --- routes ------------------------------------------------------------------------------------


def paginated_lists(app: Litestar) -> set[str]:
    """Every path with a GET whose handler returns a ``Page`` or a subclass of it (a page with
    more top-level fields, e.g. analytics' ``PeriodPage``)."""
    found = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            returned = handler.parsed_fn_signature.return_type.annotation
            returned = typing.get_origin(returned) or returned
            if "GET" in handler.http_methods and isinstance(returned, type) and issubclass(returned, Page):
                found.add(route.path_format)
    return found


# --- responses and state -----------------------------------------------------------------------


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The contract's envelope: code, message, request_id (= X-Request-ID), timestamp in UTC with Z,
    and nothing internal."""
    where = (response.request.method, str(response.request.url), response.text)
    assert response.status_code == status, where
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, (where, error)
    assert isinstance(error["message"], str), error
    assert error["message"], error
    assert error["request_id"], error
    assert response.headers.get_list("x-request-id") == [error["request_id"]], (error, response.headers)
    assert error["timestamp"].endswith("Z"), error
    assert "Traceback" not in response.text
    assert "asyncpg" not in response.text
    return error


async def fingerprint(pool: asyncpg.Pool) -> dict[str, tuple[int, str]]:
    """Row count and content hash of every table a refused request must leave alone."""
    state = {}
    for table in ALL_TABLES:
        row = await pool.fetchrow(
            f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
            f" AS digest FROM {table} t"
        )
        state[table] = (row["n"], row["digest"])
    return state


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def usage(
    lease_id: str | None = None, cost: float = 0.01, request_id: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """A valid usage report (without ``lease_id`` when None: an item of a batch)."""
    body: dict[str, Any] = {
        "request_id": request_id or f"call-{secrets.token_hex(6)}",
        "input_tokens": 100,
        "output_tokens": 50,
        "cost_usd": cost,
        "model": "gpt-4o-mini",
        "provider": "openai",
        "timestamp": "2026-11-24T10:00:00.000Z",
    }
    if lease_id is not None:
        body["lease_id"] = lease_id
    return {**body, **overrides}


def event(event_id: str | None = None, cost: float = 0.01, **fields: Any) -> dict[str, Any]:
    """A valid analytics event (``POST /api/v1/analytics/events``); a field given None is left out."""
    body: dict[str, Any] = {
        "event_id": event_id or f"evt-{secrets.token_hex(6)}",
        "event_type": "llm_request_completed",
        "timestamp": "2026-11-24T10:00:00.000Z",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "input_tokens": 100,
        "output_tokens": 50,
        "cost_usd": cost,
        "latency_ms": 420,
    }
    body.update(fields)
    return {key: value for key, value in body.items() if value is not None}


# --- people --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    id: str
    email: str
    password: str
    headers: dict[str, str]


async def make_person(client: httpx.AsyncClient, pool: asyncpg.Pool, role: str) -> Person:
    """A user of the test's own (so audit entries and rate counts are its alone), logged in."""
    user_id = ids.new_id(ids.USER)
    email = f"{role}-{secrets.token_hex(4)}@example.com"
    password = f"pw-{secrets.token_hex(8)}"
    await pool.execute(
        "INSERT INTO users (id, email, name, role, password_hash) VALUES ($1, $2, $3, $4, $5)",
        user_id,
        email,
        f"Test {role}",
        role,
        await hash_password(password),
    )
    return Person(user_id, email, password, await login(client, email, password))


@dataclass(frozen=True)
class Roles:
    owner: Person  # a user who owns the resources under test
    other: Person  # another user
    viewer: Person


async def make_roles(client: httpx.AsyncClient, pool: asyncpg.Pool) -> Roles:
    return Roles(
        await make_person(client, pool, "user"),
        await make_person(client, pool, "user"),
        await make_person(client, pool, "viewer"),
    )


async def demote_to_viewer(pool: asyncpg.Pool, person: Person) -> None:
    """A user who owns agents becomes a viewer: they keep reading them, and may change nothing."""
    await pool.execute("UPDATE users SET role = 'viewer' WHERE id = $1", person.id)


async def start_session(client: httpx.AsyncClient, person: Person) -> dict[str, Any]:
    """A new login of ``person``: the login response (user and refresh tokens)."""
    response = await client.post(
        "/api/v1/auth/login", json={"email": person.email, "password": person.password}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def make_jwt(secret: str, sub: str, *, expires_in_s: int = 600, **extra: Any) -> str:
    """An access token signed with ``secret`` (``expires_in_s`` < 0: one that has expired)."""
    now = utcnow()
    claims: dict[str, Any] = {
        "sub": sub,
        "jti": ids.new_id("jti"),
        "typ": "access",
        "iat": now - timedelta(seconds=max(-expires_in_s, 0) + 60),
        "exp": now + timedelta(seconds=expires_in_s),
        **extra,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


@contextlib.asynccontextmanager
async def client_at(app: Litestar, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the in-process app whose connection comes from ``ip``."""
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://control-plane") as http:
        yield http


def fresh_ip() -> str:
    return "10." + ".".join(str(secrets.randbelow(254) + 1) for _ in range(3))


async def sweep_until(
    pool: asyncpg.Pool, done: Callable[[], Awaitable[bool]], retention_months: int = 0
) -> None:
    """Run the housekeeping loop (a sweep every 50 ms) until ``done()``, for at most 5 s."""
    sweeper = asyncio.create_task(run_sweeper(pool, 0.05, retention_months=retention_months))
    try:
        for _ in range(100):
            if await done():
                return
            await asyncio.sleep(0.05)
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


# --- resources -----------------------------------------------------------------------------------


async def create_agent(
    client: httpx.AsyncClient, headers: dict[str, str], budget: float = 100, **extra: Any
) -> AgentHandle:
    response = await client.post(
        "/api/v1/agents",
        headers=headers,
        json={"name": f"agent-{secrets.token_hex(3)}", "budget": budget, **extra},
    )
    assert response.status_code == 201, response.text
    return AgentHandle(response.json()["id"], response.json()["ic_token"]["token"])


async def create_provider(
    client: httpx.AsyncClient, admin: dict[str, str], type_: str = "openai", key: str = FAKE_PROVIDER_KEY
) -> dict[str, Any]:
    response = await client.post("/api/v1/providers", headers=admin, json=provider_body(key=key, type=type_))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def create_project(
    client: httpx.AsyncClient, admin: dict[str, str], name: str | None = None, **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/projects", headers=admin, json={"name": name or f"proj-{secrets.token_hex(4)}", **extra}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# --- the audit log -------------------------------------------------------------------------------


async def audit_entries(pool: asyncpg.Pool, response: httpx.Response) -> list[dict[str, Any]]:
    """The audit entries written while serving ``response`` (matched by its request id);
    ``text`` is the whole row as text."""
    rows = await pool.fetch(
        "SELECT operation, resource_type, resource_id, user_id, user_role, changes::text AS changes,"
        " metadata::text AS metadata, a::text AS text FROM audit_logs a WHERE request_id = $1",
        response.headers["x-request-id"],
    )
    return [dict(row) for row in rows]


async def assert_one_audit(
    pool: asyncpg.Pool, response: httpx.Response, operation: str, resource_id: str, *hidden: str
) -> dict[str, Any]:
    """Exactly one entry, for this operation and resource, with no password hash nor any of
    ``hidden`` anywhere in it."""
    entries = await audit_entries(pool, response)
    assert [(e["operation"], e["resource_id"]) for e in entries] == [(operation, resource_id)], entries
    for secret in (*hidden, "$argon2"):
        assert secret not in entries[0]["text"], (operation, entries[0])
    return entries[0]


async def assert_refused(
    pool: asyncpg.Pool, response: httpx.Response, status: int, code: str
) -> dict[str, Any]:
    """An error in the contract's envelope, and no audit entry."""
    error = assert_error(response, status, code)
    assert await audit_entries(pool, response) == []
    return error
