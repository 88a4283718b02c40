"""The permission matrix: every route of the app, called by every kind of caller, from one table.

:data:`ROUTES` classifies every ``(method, path template)`` the app registers with a
:class:`Policy` (what each caller gets) and a ``prepare`` step (path parameters and a body that
are valid for the caller, made from real resources). The first test fails when the app
registers a route the table does not classify, or the table names one the app does not
have, so no route can slip in unclassified. Every route is then called as each caller:

* ``none``, ``bad`` (garbage), ``expired`` (a JWT past its expiry), ``revoked`` (a JWT whose
  session was logged out): 401 everywhere but the public routes;
* ``ic``: an agent's IC token: 403 on user routes, the budget protocol's success on its own;
* ``viewer``, ``user`` (the owner of the resources), ``other`` (another user), ``admin``:
  their role's answer. A resource another user may not read is 404 to them; a viewer may
  read its own resources and is refused (403) a change to them.

Callers get the route's success status (its handler's) or the error the policy names, in the
contract's error format. A successful mutation writes exactly one audit entry, by the caller
and with none of the request's or response's secrets in it; anything refused, and any read,
writes none. Only the public routes (health, version, login, refresh with its refresh token,
validate, the OpenAPI document, the dashboard page and its files) take no token; OPTIONS
(Litestar's automatic preflight answer, which reads nothing) is not part of the matrix.

To classify a new route, add it to :data:`ROUTES` with one of the policies below (or a new
one) and a ``prepare`` that makes what the call needs (see the ``World`` helpers).
"""

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute, WebSocketRoute

from control_plane.auth import repository as sessions
from control_plane.auth.secrets import hash_password, new_token, token_hash
from iron import analytics, ids
from iron.timefmt import utcnow
from tests.conftest import AgentHandle, provider_body
from tests.control_plane.helpers import (
    Person,
    assert_error,
    audit_entries,
    bearer,
    create_agent,
    create_project,
    create_provider,
    make_jwt,
    usage,
)

ANONYMOUS = ("none", "bad", "expired", "revoked")
CALLERS = (*ANONYMOUS, "ic", "viewer", "user", "other", "admin")
OK = 0  # in a policy: the route's success status


@dataclass(frozen=True)
class Policy:
    """The status each kind of caller gets (``OK``: the route's success status)."""

    name: str
    admin: int
    user: int  # the owner of the resources the call names
    other: int  # a user who does not own them
    viewer: int  # a viewer, on resources of its own
    ic: int = 403
    anonymous: int = 401

    def expect(self, caller: str) -> int:
        return self.anonymous if caller in ANONYMOUS else int(getattr(self, caller))


PUBLIC = Policy("public", OK, OK, OK, OK, ic=OK, anonymous=OK)
SIGNED_IN = Policy("any signed-in user", OK, OK, OK, OK)
ADMIN = Policy("admins only", OK, 403, 403, 403)
WRITER = Policy("users and admins make their own; viewers may not", OK, OK, OK, 403)
READ_OWN = Policy("admins; the owner; a viewer its own; others 404", OK, OK, 404, OK)
OWN = Policy("admins and the owner, viewers included; others 404", OK, OK, 404, OK)
CHANGE_OWN = Policy("admins and the owner; a viewer 403 on its own; others 404", OK, OK, 404, 403)
OWNER_ONLY = Policy("the owner only: an admin would obtain another's credential", 403, OK, 404, OK)
AGENT = Policy("the budget protocol: an IC token only", 401, 401, 401, 401, ic=OK)


@dataclass
class Call:
    params: dict[str, str] = field(default_factory=dict)  # path parameters
    body: Any = None  # JSON, None for no body
    headers: dict[str, str] | None = None  # instead of the caller's (a session to log out)
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class World:
    """The callers and the resources the calls name, all made through the API."""

    client: httpx.AsyncClient
    pool: asyncpg.Pool
    people: dict[str, Person]  # viewer, user, other, admin, and "login" for login/refresh
    headers: dict[str, dict[str, str]]  # by caller
    provider_id: str
    project_id: str
    ic_agent: AgentHandle  # the ``ic`` caller's agent, owned by ``user``
    password_hash: str

    @property
    def admin(self) -> dict[str, str]:
        return self.people["admin"].headers

    def owner_for(self, caller: str) -> Person:
        """Whose resources a call names: a viewer's own, else the owner's (``user``)."""
        return self.people["viewer" if caller == "viewer" else "user"]

    async def call(self, method: str, path: str, body: Any = None, ok: int = 200) -> dict[str, Any]:
        response = await self.client.request(method, path, headers=self.admin, json=body)
        assert response.status_code == ok, response.text
        return response.json() if response.content else {}

    async def agent_id(self, owner: Person, *, ic_token: bool = True) -> str:
        """A new agent of ``owner`` with the shared provider (a viewer, who may not create one,
        is handed one an admin made)."""
        viewer = owner is self.people["viewer"]
        made = await create_agent(
            self.client, self.admin if viewer else owner.headers, 100, providers=[self.provider_id]
        )
        if viewer:
            await self.pool.execute("UPDATE agents SET owner_id = $2 WHERE id = $1", made.id, owner.id)
        if not ic_token:
            await self.call("DELETE", f"/api/v1/agents/{made.id}/ic-token", ok=204)
        return made.id

    async def ic_token_id(self, owner: Person) -> str:
        token = await self.call("GET", f"/api/v1/agents/{await self.agent_id(owner)}/ic-token")
        return str(token["id"])

    async def api_token_id(self, owner: Person) -> str:
        response = await self.client.post("/api/v1/api-tokens", headers=owner.headers, json={"name": "m"})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def budget_request_id(self, owner: Person) -> str:
        """A pending request of ``owner`` on an agent of theirs (filed by an admin, handed over)."""
        body = {"agent_id": await self.agent_id(owner), "requested_budget": 500, "justification": "x" * 20}
        made = await self.call("POST", "/api/v1/budget-requests", body, 201)
        await self.pool.execute(
            "UPDATE budget_requests SET requester_id = $2 WHERE id = $1", made["id"], owner.id
        )
        return str(made["id"])

    async def user_id(self, status: str = "active") -> str:
        """A user to act on (inserted: nobody logs in as them)."""
        user_id = ids.new_id(ids.USER)
        await self.pool.execute(
            "INSERT INTO users (id, email, name, role, status, password_hash)"
            " VALUES ($1, $2, 'Target', 'user', $3, $4)",
            user_id,
            f"target-{secrets.token_hex(4)}@example.com",
            status,
            self.password_hash,
        )
        return user_id

    async def lease_id(self) -> str:
        response = await self.client.post(
            "/api/v1/budget/handshake", headers=self.ic_agent.headers, json={"requested_budget": 1}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["lease_id"])


Prepare = Callable[[World, str], Awaitable[Call]]


async def nothing(world: World, caller: str) -> Call:
    return Call()


def body(value: Any) -> Prepare:
    async def prepare(world: World, caller: str) -> Call:
        return Call(body=value() if callable(value) else value)

    return prepare


async def an_agent(world: World, caller: str) -> Call:
    return Call({"agent_id": await world.agent_id(world.owner_for(caller))})


async def an_agent_without_ic_token(world: World, caller: str) -> Call:
    agent_id = await world.agent_id(world.owner_for(caller), ic_token=False)
    return Call({"agent_id": agent_id}, {"agent_id": agent_id})


async def an_ic_token(world: World, caller: str) -> Call:
    return Call({"token_id": await world.ic_token_id(world.owner_for(caller))})


async def an_api_token(world: World, caller: str) -> Call:
    return Call({"token_id": await world.api_token_id(world.owner_for(caller))})


async def a_budget_request(world: World, caller: str) -> Call:
    return Call({"budget_request_id": await world.budget_request_id(world.owner_for(caller))})


def a_user(status: str = "active", payload: Any = None) -> Prepare:
    async def prepare(world: World, caller: str) -> Call:
        return Call({"user_id": await world.user_id(status)}, payload)

    return prepare


def with_body(prepare: Prepare, payload: Any) -> Prepare:
    async def prepared(world: World, caller: str) -> Call:
        call = await prepare(world, caller)
        call.body = payload
        return call

    return prepared


async def a_render_not_served(world: World, caller: str) -> Call:
    return Call({"path": "openapi.yaml"})


async def a_provider(world: World, caller: str) -> Call:
    return Call({"provider_id": (await create_provider(world.client, world.admin))["id"]})


async def the_provider(world: World, caller: str) -> Call:
    return Call({"provider_id": world.provider_id})


async def an_agent_and_its_provider(world: World, caller: str) -> Call:
    return Call({"agent_id": await world.agent_id(world.owner_for(caller)), "provider_id": world.provider_id})


async def a_project(world: World, caller: str) -> Call:
    return Call({"project_id": (await create_project(world.client, world.admin))["id"]})


async def the_project(world: World, caller: str) -> Call:
    return Call({"project_id": world.project_id})


async def login_body(world: World, caller: str) -> Call:
    person = world.people["login"]
    return Call(body={"email": person.email, "password": person.password})


async def a_refresh_token(world: World, caller: str) -> Call:
    session = await session_of(world.client, world.pool, world.people["login"].id)
    return Call(body={"refresh_token": session["refresh_token"]})


async def a_session_to_end(world: World, caller: str) -> Call:
    """Logout ends the session of the token it is called with: a session of the caller's own."""
    if caller not in world.people:
        return Call()
    session = await session_of(world.client, world.pool, world.people[caller].id)
    return Call(headers=bearer(session["user_token"]))


async def a_usage_batch(world: World, caller: str) -> Call:
    return Call(body={"lease_id": await world.lease_id(), "reports": [usage(None)]})


async def an_event(world: World, caller: str) -> Call:
    """One LLM call of the ``ic`` caller's agent (its own event id: each call is new)."""
    event = {
        "event_id": f"matrix-{secrets.token_hex(6)}",
        "event_type": "llm_request_completed",
        "timestamp": utcnow().isoformat(),
        "model": "gpt-4o-mini",
        "provider": "openai",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_micros": 30,
    }
    return Call(body=event)


async def an_agents_usage(world: World, caller: str) -> Call:
    """An analytics query narrowed to an agent of the caller's (another's: 404)."""
    return Call(query={"agent_id": await world.agent_id(world.owner_for(caller))})


async def a_dashboard_file(world: World, caller: str) -> Call:
    return Call({"name": "app.js"})


async def a_refresh(world: World, caller: str) -> Call:
    return Call(body={"lease_id": await world.lease_id(), "requested_budget": 1})


async def a_lease_to_return(world: World, caller: str) -> Call:
    return Call(body={"lease_id": await world.lease_id()})


async def a_budget_request_of_an_agent(world: World, caller: str) -> Call:
    agent_id = await world.agent_id(world.owner_for(caller))
    return Call(body={"agent_id": agent_id, "requested_budget": 500, "justification": "y" * 20})


def new_provider() -> dict[str, Any]:
    return provider_body(f"matrix-{secrets.token_hex(4)}", key=f"sk-matrix-{secrets.token_hex(8)}")


def new_user() -> dict[str, Any]:
    return {"email": f"new-{secrets.token_hex(4)}@example.com", "name": "New", "role": "user"}


def named(prefix: str) -> Callable[[], dict[str, Any]]:
    return lambda: {"name": f"{prefix}-{secrets.token_hex(4)}"}


@dataclass(frozen=True)
class Route:
    policy: Policy
    prepare: Prepare = nothing
    #: Whether a success writes an audit entry (mutations do; sessions and the protocol do not).
    audited: bool = True
    #: The success status when it is not the handler's (the render-less schema path: 404).
    success: int | None = None


HANDSHAKE = Route(AGENT, body({"requested_budget": 1}), audited=False)
REPORT = Route(AGENT, a_usage_batch, audited=False)
REFRESH = Route(AGENT, a_refresh, audited=False)
RETURN = Route(AGENT, a_lease_to_return, audited=False)
V1 = "/api/v1"
ANALYTICS = f"{V1}/analytics"
BREQ = {"/api/v1/budget-requests", "/api/v1/budget/requests"}

#: Every route of the app, by (method, path template).
ROUTES: dict[tuple[str, str], Route] = {
    # system and the OpenAPI document
    ("GET", "/api/health"): Route(PUBLIC),
    ("GET", "/api/version"): Route(PUBLIC),
    ("GET", f"{V1}/version"): Route(PUBLIC),
    ("GET", "/schema"): Route(PUBLIC),
    ("GET", "/schema/openapi.json"): Route(PUBLIC),
    ("GET", "/schema/{path}"): Route(PUBLIC, a_render_not_served, success=404),
    # sessions
    ("POST", f"{V1}/auth/login"): Route(PUBLIC, login_body, audited=False),
    ("POST", f"{V1}/auth/refresh"): Route(PUBLIC, a_refresh_token, audited=False),
    ("POST", f"{V1}/auth/validate"): Route(PUBLIC, body({"token": "not-a-token"}), audited=False),
    ("POST", f"{V1}/auth/logout"): Route(SIGNED_IN, a_session_to_end, audited=False),
    # users
    ("GET", f"{V1}/users"): Route(ADMIN),
    ("POST", f"{V1}/users"): Route(ADMIN, body(new_user)),
    ("GET", f"{V1}/users/{{user_id}}"): Route(ADMIN, a_user()),
    ("DELETE", f"{V1}/users/{{user_id}}"): Route(ADMIN, a_user()),
    ("PUT", f"{V1}/users/{{user_id}}/suspend"): Route(ADMIN, a_user()),
    ("PUT", f"{V1}/users/{{user_id}}/activate"): Route(ADMIN, a_user("suspended")),
    ("PUT", f"{V1}/users/{{user_id}}/role"): Route(ADMIN, a_user(payload={"role": "viewer"})),
    ("POST", f"{V1}/users/{{user_id}}/reset-password"): Route(ADMIN, a_user(payload={})),
    # API tokens
    ("GET", f"{V1}/api-tokens"): Route(SIGNED_IN),
    ("POST", f"{V1}/api-tokens"): Route(SIGNED_IN, body(named("matrix"))),
    ("GET", f"{V1}/api-tokens/{{token_id}}"): Route(READ_OWN, an_api_token),
    ("DELETE", f"{V1}/api-tokens/{{token_id}}"): Route(OWN, an_api_token),
    ("POST", f"{V1}/api-tokens/{{token_id}}/rotate"): Route(OWNER_ONLY, an_api_token),
    # providers
    ("GET", f"{V1}/providers"): Route(SIGNED_IN),
    ("POST", f"{V1}/providers"): Route(ADMIN, body(new_provider)),
    ("GET", f"{V1}/providers/{{provider_id}}"): Route(SIGNED_IN, the_provider),
    ("PUT", f"{V1}/providers/{{provider_id}}"): Route(ADMIN, with_body(a_provider, {"models": ["m-2"]})),
    ("DELETE", f"{V1}/providers/{{provider_id}}"): Route(ADMIN, a_provider),
    # projects
    ("GET", f"{V1}/projects"): Route(SIGNED_IN),
    ("POST", f"{V1}/projects"): Route(ADMIN, body(named("project"))),
    ("GET", f"{V1}/projects/{{project_id}}"): Route(SIGNED_IN, the_project),
    ("PUT", f"{V1}/projects/{{project_id}}"): Route(ADMIN, with_body(a_project, {"description": "new"})),
    # agents
    ("GET", f"{V1}/agents"): Route(SIGNED_IN),
    ("POST", f"{V1}/agents"): Route(WRITER, body(lambda: {**named("agent")(), "budget": 1})),
    ("GET", f"{V1}/agents/{{agent_id}}"): Route(READ_OWN, an_agent),
    ("PUT", f"{V1}/agents/{{agent_id}}"): Route(CHANGE_OWN, with_body(an_agent, {"description": "new"})),
    ("DELETE", f"{V1}/agents/{{agent_id}}"): Route(CHANGE_OWN, an_agent),
    ("GET", f"{V1}/agents/{{agent_id}}/providers"): Route(READ_OWN, an_agent),
    ("PUT", f"{V1}/agents/{{agent_id}}/providers"): Route(CHANGE_OWN, with_body(an_agent, {"providers": []})),
    ("DELETE", f"{V1}/agents/{{agent_id}}/providers/{{provider_id}}"): Route(
        CHANGE_OWN, an_agent_and_its_provider
    ),
    ("GET", f"{V1}/agents/{{agent_id}}/status"): Route(READ_OWN, an_agent),
    # IC tokens, per agent and by token
    ("POST", f"{V1}/agents/{{agent_id}}/ic-token"): Route(
        CHANGE_OWN, with_body(an_agent_without_ic_token, None)
    ),
    ("GET", f"{V1}/agents/{{agent_id}}/ic-token"): Route(READ_OWN, an_agent),
    ("DELETE", f"{V1}/agents/{{agent_id}}/ic-token"): Route(CHANGE_OWN, an_agent),
    ("POST", f"{V1}/agents/{{agent_id}}/ic-token/regenerate"): Route(CHANGE_OWN, an_agent),
    ("GET", f"{V1}/tokens"): Route(SIGNED_IN),
    ("POST", f"{V1}/tokens"): Route(CHANGE_OWN, an_agent_without_ic_token),
    ("GET", f"{V1}/tokens/{{token_id}}"): Route(READ_OWN, an_ic_token),
    ("DELETE", f"{V1}/tokens/{{token_id}}"): Route(CHANGE_OWN, an_ic_token),
    ("PUT", f"{V1}/tokens/{{token_id}}/rotate"): Route(CHANGE_OWN, an_ic_token),
    # budget limits
    ("PUT", f"{V1}/limits/agents/{{agent_id}}/budget"): Route(ADMIN, with_body(an_agent, {"budget": 500})),
    ("GET", f"{V1}/limits/agents/{{agent_id}}/budget/history"): Route(ADMIN, an_agent),
    # budget requests (canonical paths and the seed's aliases)
    **{("POST", base): Route(CHANGE_OWN, a_budget_request_of_an_agent) for base in BREQ},
    **{("GET", base): Route(SIGNED_IN) for base in BREQ},
    **{("GET", f"{base}/{{budget_request_id}}"): Route(READ_OWN, a_budget_request) for base in BREQ},
    **{("DELETE", f"{base}/{{budget_request_id}}"): Route(CHANGE_OWN, a_budget_request) for base in BREQ},
    ("PUT", f"{V1}/budget-requests/{{budget_request_id}}/approve"): Route(
        ADMIN, with_body(a_budget_request, {})
    ),
    ("PATCH", f"{V1}/budget/requests/{{budget_request_id}}/approve"): Route(
        ADMIN, with_body(a_budget_request, {})
    ),
    ("PUT", f"{V1}/budget-requests/{{budget_request_id}}/reject"): Route(
        ADMIN, with_body(a_budget_request, {"review_notes": "Not this quarter."})
    ),
    ("PATCH", f"{V1}/budget/requests/{{budget_request_id}}/reject"): Route(
        ADMIN, with_body(a_budget_request, {"review_notes": "Not this quarter."})
    ),
    # the audit log
    ("GET", f"{V1}/audit-logs"): Route(ADMIN),
    ("GET", f"{V1}/audit-logs/export"): Route(ADMIN),
    # the budget protocol (and its aliases)
    ("POST", f"{V1}/budget/handshake"): HANDSHAKE,
    ("POST", "/api/budget/handshake"): HANDSHAKE,
    ("POST", f"{V1}/auth/handshake"): HANDSHAKE,
    ("POST", f"{V1}/budget/report"): REPORT,
    ("POST", "/api/budget/report"): REPORT,
    ("POST", f"{V1}/budget/refresh"): REFRESH,
    ("POST", "/api/budget/refresh"): REFRESH,
    ("POST", f"{V1}/budget/return"): RETURN,
    ("POST", "/api/budget/return"): RETURN,
    ("POST", f"{V1}/agents/provider-key"): Route(AGENT, audited=False),
    # analytics: ingestion is the agent side (not audited, as the protocol's reports), queries
    ("POST", f"{ANALYTICS}/events"): Route(AGENT, an_event, audited=False),
    # any signed-in caller reads the usage of the agents it may read; naming another's agent is 404
    **{("GET", f"{ANALYTICS}/{query}"): Route(READ_OWN, an_agents_usage) for query in analytics.QUERIES},
    # realtime: authenticated by its first message (tests/realtime), any signed-in user
    ("WS", "/ws"): Route(SIGNED_IN),
    # the dashboard: the page and its files hold no data (it reads the API with the user's token)
    ("GET", "/"): Route(PUBLIC),
    ("GET", "/dashboard/{name}"): Route(PUBLIC, a_dashboard_file),
}


# --- the matrix ------------------------------------------------------------------------------------


def registered_routes(app: Litestar) -> dict[tuple[str, str], HTTPRouteHandler | None]:
    """Every (method, path template) of the app (``WS`` for a WebSocket), with its handler."""
    found: dict[tuple[str, str], HTTPRouteHandler | None] = {}
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            found[("WS", route.path_format)] = None
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                for method in handler.http_methods - {"OPTIONS"}:
                    found[(method, route.path_format)] = handler
    return found


def test_every_route_is_classified_and_only_the_public_ones_take_no_token(app: Litestar) -> None:
    registered = set(registered_routes(app))
    assert sorted(registered - set(ROUTES)) == [], "routes the policy table does not classify"
    assert sorted(set(ROUTES) - registered) == [], "routes in the policy table the app does not have"
    public = {key for key, route in ROUTES.items() if route.policy is PUBLIC}
    assert {path for _, path in public} == {
        "/api/health",
        "/api/version",
        "/api/v1/version",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",  # authenticated by the refresh token in its body
        "/api/v1/auth/validate",
        "/schema",
        "/schema/openapi.json",
        "/schema/{path}",
        "/",
        "/dashboard/{name}",
    }


async def session_of(client: httpx.AsyncClient, pool: asyncpg.Pool, user_id: str) -> dict[str, Any]:
    """A new session of the user, started from a refresh token put in place (no password hashing:
    the login route is the only one of the matrix that needs it)."""
    refresh_token = new_token(ids.REFRESH_TOKEN_VALUE)
    await sessions.insert_refresh_token(
        pool, token_hash(refresh_token), user_id, ids.new_id("sess"), utcnow() + timedelta(hours=1)
    )
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})
    assert response.status_code == 200, response.text
    started: dict[str, Any] = response.json()
    return started


@pytest.fixture(scope="module")
async def world(client: httpx.AsyncClient, pool: asyncpg.Pool, app: Litestar) -> World:
    password = secrets.token_urlsafe(12)
    password_hash = await hash_password(password)
    people = {}
    for name in ("viewer", "user", "other", "admin", "login"):
        user_id, email = ids.new_id(ids.USER), f"matrix-{name}-{secrets.token_hex(4)}@example.com"
        await pool.execute(
            "INSERT INTO users (id, email, name, role, password_hash) VALUES ($1, $2, $3, $4, $5)",
            user_id,
            email,
            f"Matrix {name}",
            name if name in ("viewer", "admin") else "user",
            password_hash,
        )
        session = await session_of(client, pool, user_id)
        people[name] = Person(user_id, email, password, bearer(session["user_token"]))
    provider = await create_provider(client, people["admin"].headers)
    project = await create_project(client, people["admin"].headers)
    ic_agent = await create_agent(client, people["user"].headers, 1000, providers=[provider["id"]])
    ended = await session_of(client, pool, people["user"].id)
    logout = await client.post("/api/v1/auth/logout", headers=bearer(ended["user_token"]))
    assert logout.status_code == 204, logout.text
    secret = app.state.settings.jwt_secret
    headers = {
        "none": {},
        "bad": bearer("not-a-token"),
        "expired": bearer(make_jwt(secret, people["user"].id, expires_in_s=-60)),
        "revoked": bearer(ended["user_token"]),
        "ic": ic_agent.headers,
        **{role: people[role].headers for role in ("viewer", "user", "other", "admin")},
    }
    return World(client, pool, people, headers, provider["id"], project["id"], ic_agent, password_hash)


SECRET_FIELDS = {"password", "token", "user_token", "refresh_token", "api_key", "temporary_password"}


def secrets_in(value: Any) -> set[str]:
    """The values of secret-named fields anywhere in a JSON value."""
    if isinstance(value, dict):
        found = {v for k, v in value.items() if k in SECRET_FIELDS and isinstance(v, str)}
        return found.union(*(secrets_in(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(secrets_in(v) for v in value))
    return set()


def expected_code(status: int, caller: str, route: Route) -> str:
    if status == 401:
        return (
            "AUTH_TOKEN_EXPIRED"
            if caller == "expired" and route.policy is not AGENT
            else "AUTH_INVALID_TOKEN"
        )
    return {403: "PERMISSION_DENIED", 404: "RESOURCE_NOT_FOUND"}[status]


#: Every HTTP route of the table, as every caller (a WebSocket route, ``WS``, is classified in
#: the table but called by its own tests: it authenticates with its first message).
CASES = [(method, path, caller) for method, path in ROUTES if method != "WS" for caller in CALLERS]
ROLE = {"viewer": "viewer", "user": "user", "other": "user", "admin": "admin"}


@pytest.mark.parametrize(
    ("method", "path", "caller"),
    CASES,
    ids=[f"{method} {path} as {caller}" for method, path, caller in CASES],
)
async def test_the_permission_matrix(
    app: Litestar, world: World, pool: asyncpg.Pool, method: str, path: str, caller: str
) -> None:
    route = ROUTES[(method, path)]
    handler = registered_routes(app)[(method, path)]
    assert handler is not None
    call = await route.prepare(world, caller)
    headers = call.headers if call.headers is not None else world.headers[caller]
    response = await world.client.request(
        method, path.format(**call.params), params=call.query, headers=headers, json=call.body
    )
    expected = route.policy.expect(caller)
    success = route.success or handler.status_code
    entries = await audit_entries(pool, response)
    if expected != OK:
        assert_error(response, expected, expected_code(expected, caller, route))
        assert entries == [], entries
        return
    assert response.status_code == success, (response.status_code, response.text)
    if method == "GET" or not route.audited or success >= 400:
        assert entries == [], entries
        return
    (entry,) = entries
    assert (entry["user_id"], entry["user_role"]) == (world.people[caller].id, ROLE[caller])
    token = headers.get("Authorization", "").removeprefix("Bearer ")
    answer = response.json() if response.content else None
    for secret in {*secrets_in(call.body), *secrets_in(answer), token, "$argon2"} - {""}:
        assert secret not in entry["text"], (secret, entry)
