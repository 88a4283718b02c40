"""The list contract of DESIGN.md section 3, the same test for every paginated list of the app.

Each list is found in the route table (a GET whose handler returns a ``Page`` or a subclass of
it) and must have an entry in :data:`LISTS`; the test fails for a list that has none. An entry
says how to make three items that one query (``narrow``) selects exactly, a sortable field with
distinct values, a bad value of each filter, and, where they differ from the usual, the field
that identifies an item and the top-level fields a page has besides ``data`` and ``pagination``
(its schema documents them). Every list then gets the same checks: the empty shape, pages that
neither overlap nor leave gaps, a page past the end, ``per_page`` bounds, every bad parameter
reported at once, sorting both ways, case-insensitive search with literal wildcards, and that
each filter narrows. The filters in the table are also the ones the OpenAPI document lists.

To cover a new list: add an entry whose ``seed`` makes its three items (see the ones below).
"""

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar

from control_plane.lib import openapi
from iron import ids
from iron.timefmt import iso
from tests.conftest import provider_body
from tests.control_plane.helpers import (
    Person,
    assert_error,
    create_agent,
    create_project,
    make_person,
    paginated_lists,
)

WHY = "A longer evaluation run needs more budget than planned."


@dataclass
class Seeded:
    ids: list[str]  # three items, in creation order
    narrow: str  # a query that selects exactly them
    nothing: str  # a query of the same kind that selects nothing
    #: Filter queries and the ids they select (``narrow`` is added unless they search themselves).
    narrowing: list[tuple[str, set[str]]]


@dataclass(frozen=True)
class Context:
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    admin: Person  # the reader of every list: an admin sees everyone's items
    tag: str  # in the items' searchable text (or, for the audit log, unused)

    async def call(self, method: str, path: str, body: Any = None, ok: int = 200) -> dict[str, Any]:
        response = await self.client.request(method, path, headers=self.admin.headers, json=body)
        assert response.status_code == ok, response.text
        return response.json() if response.content else {}

    def name(self, n: int) -> str:
        return f"{self.tag}-{n}"

    def searched(self, ids: list[str], narrowing: list[tuple[str, set[str]]]) -> Seeded:
        """Items whose searchable text holds the tag."""
        return Seeded(ids, f"search={self.tag}", f"search={self.tag}-none", narrowing)


@dataclass(frozen=True)
class ListSpec:
    seed: Callable[[Context], Awaitable[Seeded]]
    #: A sortable field whose values differ between the three items, and how to read it.
    sort: str
    key: Callable[[dict[str, Any]], Any]
    #: Every filter and a value it must refuse.
    bad: dict[str, str]
    #: The field that identifies an item.
    id: str = "id"
    #: Top-level fields besides ``data`` and ``pagination``.
    extra: frozenset[str] = field(default_factory=frozenset)


# --- seeds -----------------------------------------------------------------------------------------


async def agents(ctx: Context) -> Seeded:
    project = await create_project(ctx.client, ctx.admin.headers)
    made = [
        await create_agent(ctx.client, ctx.admin.headers, n + 1, name=ctx.name(n), description="listed")
        for n in range(3)
    ]
    await ctx.call("PUT", f"/api/v1/agents/{made[1].id}", {"project_id": project["id"]})
    listed = [agent.id for agent in made]
    return ctx.searched(
        listed, [(f"project_id={project['id']}", {listed[1]}), ("status=active", set(listed))]
    )


async def providers(ctx: Context) -> Seeded:
    made = []
    for n, type_ in enumerate(("cohere", "google", "cohere")):
        body = provider_body(ctx.name(n), key="sk-listed", type=type_)
        made.append((await ctx.call("POST", "/api/v1/providers", body, 201))["id"])
    await ctx.call("PUT", f"/api/v1/providers/{made[2]}", {"status": "disabled"})
    return ctx.searched(made, [("type=google", {made[1]}), ("type=cohere&status=disabled", {made[2]})])


async def projects(ctx: Context) -> Seeded:
    made = [(await create_project(ctx.client, ctx.admin.headers, ctx.name(n)))["id"] for n in range(3)]
    return ctx.searched(made, [(f"search={ctx.name(1)}", {made[1]})])


async def api_tokens(ctx: Context) -> Seeded:
    made = [
        (await ctx.call("POST", "/api/v1/api-tokens", {"name": ctx.name(n)}, 201))["id"] for n in range(3)
    ]
    await ctx.call("DELETE", f"/api/v1/api-tokens/{made[0]}", ok=204)
    return ctx.searched(made, [("status=revoked", {made[0]}), (f"user_id={ctx.admin.id}", set(made))])


async def users(ctx: Context) -> Seeded:
    made = []
    for n, role in enumerate(("user", "viewer", "user")):
        body = {"email": f"{ctx.name(n)}@example.com", "name": f"Listed {n}", "role": role}
        made.append((await ctx.call("POST", "/api/v1/users", body, 201))["id"])
    await ctx.call("PUT", f"/api/v1/users/{made[2]}/suspend")
    return ctx.searched(made, [("role=viewer", {made[1]}), ("status=suspended", {made[2]})])


async def budget_requests(ctx: Context) -> Seeded:
    made, agent_ids = [], []
    for n in range(3):
        agent = await create_agent(ctx.client, ctx.admin.headers, 1, name=ctx.name(n))
        body = {"agent_id": agent.id, "requested_budget": 10 + n, "justification": WHY}
        made.append((await ctx.call("POST", "/api/v1/budget-requests", body, 201))["id"])
        agent_ids.append(agent.id)
    await ctx.call("DELETE", f"/api/v1/budget-requests/{made[0]}")
    return ctx.searched(made, [("status=cancelled", {made[0]}), (f"agent_id={agent_ids[1]}", {made[1]})])


async def ic_tokens(ctx: Context) -> Seeded:
    made, agent_ids = [], []
    for n in range(3):
        agent = await create_agent(ctx.client, ctx.admin.headers, 1, name=ctx.name(n))
        made.append((await ctx.call("GET", f"/api/v1/agents/{agent.id}/ic-token"))["id"])
        agent_ids.append(agent.id)
    await ctx.call("DELETE", f"/api/v1/agents/{agent_ids[0]}/ic-token", ok=204)
    return ctx.searched(made, [("status=revoked", {made[0]}), (f"agent_id={agent_ids[1]}", {made[1]})])


async def audit_logs(ctx: Context) -> Seeded:
    """Three mutations by an admin of this test's own (``narrow``: their user id)."""
    actor = await make_person(ctx.client, ctx.pool, "admin")
    as_actor = Context(ctx.client, ctx.pool, actor, ctx.tag)
    project = await create_project(ctx.client, actor.headers)
    await as_actor.call("PUT", f"/api/v1/projects/{project['id']}", {"description": "listed"})
    await as_actor.call("POST", "/api/v1/api-tokens", {"name": ctx.name(0)}, 201)
    rows = await ctx.pool.fetch(
        "SELECT id FROM audit_logs WHERE user_id = $1 ORDER BY timestamp, id", actor.id
    )
    made = [row["id"] for row in rows]
    return Seeded(
        made,
        f"user_id={actor.id}",
        f"user_id={ids.new_id(ids.USER)}",
        [
            ("operation=project_updated", {made[1]}),
            (f"resource_type=project&resource_id={project['id']}", set(made[:2])),
            ("start_date=2000-01-01&end_date=2999-12-31", set(made)),
        ],
    )


def analytics(by_agent: bool, narrowing: bool = True) -> Callable[[Context], Awaitable[Seeded]]:
    """Three agents of a project, each with one call a day apart: agent ``n`` spends and uses
    more with ``n`` and calls provider label, model and event id ``name(n)``. The items are the
    agents (``by_agent``) or those names; without ``narrowing`` the period and provider narrow
    only figures, not items."""

    async def seed(ctx: Context) -> Seeded:
        project = (await create_project(ctx.client, ctx.admin.headers))["id"]
        empty = (await create_project(ctx.client, ctx.admin.headers))["id"]
        body = {
            "name": ctx.name(1),
            "type": "cohere",
            "endpoint": "https://llm.example/v1",
            "credentials": {"api_key": "sk-listed"},
        }
        provider = (await ctx.call("POST", "/api/v1/providers", body, 201))["id"]
        now = datetime.now(UTC)
        agents = []
        for n in range(3):
            agent = await create_agent(
                ctx.client, ctx.admin.headers, 10 * (n + 1), name=ctx.name(n), project_id=project
            )
            event = {
                "event_id": ctx.name(n),
                "event_type": "llm_request_completed",
                "timestamp_ms": int((now - timedelta(days=n + 1)).timestamp() * 1000),
                "cost_micros": 1000 * (n + 1),
                "input_tokens": 100 * (n + 1),
                "output_tokens": 10,
                "model": ctx.name(n),
                "provider": ctx.name(n),
            }
            response = await ctx.client.post("/api/v1/analytics/events", headers=agent.headers, json=event)
            assert response.status_code == 202, response.text
            agents.append(agent.id)
        made = agents if by_agent else [ctx.name(n) for n in range(3)]
        narrowed = [(f"agent_id={agents[1]}", {made[1]})]
        if narrowing:
            since = iso(now - timedelta(days=2, hours=12))
            narrowed += [(f"provider_id={provider}", {made[1]}), (f"from={since}", set(made[:2]))]
        return Seeded(made, f"project_id={project}", f"project_id={empty}", narrowed)

    return seed


SEARCH_BAD = "s" * 201
BUDGET_REQUESTS = ListSpec(
    budget_requests,
    "requested_budget",
    lambda item: item["requested_budget"],
    {"status": "granted", "agent_id": "agent-1", "search": SEARCH_BAD},
)

ANALYTICS_BAD = {
    "period": "weekly",
    "from": "yesterday",
    "to": "2026-13-01",
    "agent_id": "a1",
    "project_id": "proj_x",
    "provider_id": ids.new_id(ids.AGENT),
}
PERIOD = frozenset({"period"})


def analytics_list(seed: Callable[[Context], Awaitable[Seeded]], sort: str, key: str, id_: str) -> ListSpec:
    return ListSpec(seed, sort, lambda item: item[key], ANALYTICS_BAD, id_, PERIOD)


#: Every paginated list of the app, by path.
LISTS: dict[str, ListSpec] = {
    "/api/v1/agents": ListSpec(
        agents,
        "budget",
        lambda item: item["budget"],
        {"status": "gone", "project_id": "proj_1", "search": SEARCH_BAD},
    ),
    "/api/v1/providers": ListSpec(
        providers, "name", lambda item: item["name"], {"type": "gpt", "status": "on", "search": SEARCH_BAD}
    ),
    "/api/v1/projects": ListSpec(projects, "name", lambda item: item["name"], {"search": SEARCH_BAD}),
    "/api/v1/api-tokens": ListSpec(
        api_tokens,
        "name",
        lambda item: item["name"],
        {"user_id": "bob", "status": "lost", "search": SEARCH_BAD},
    ),
    "/api/v1/users": ListSpec(
        users,
        "email",
        lambda item: item["email"],
        {"role": "root", "status": "deleted", "search": SEARCH_BAD},
    ),
    "/api/v1/budget-requests": BUDGET_REQUESTS,
    "/api/v1/budget/requests": BUDGET_REQUESTS,
    "/api/v1/tokens": ListSpec(
        ic_tokens,
        "agent_name",
        lambda item: item["agent_name"],
        {"agent_id": "agent_x", "status": "live", "search": SEARCH_BAD},
    ),
    "/api/v1/audit-logs": ListSpec(
        audit_logs,
        "timestamp",
        lambda item: item["timestamp"],
        {
            "user_id": "bob",
            "resource_type": "",
            "resource_id": "r" * 101,
            "operation": "",
            "start_date": "yesterday",
            "end_date": "2025-13-01",
        },
    ),
    "/api/v1/analytics/spending/by-agent": analytics_list(analytics(True), "cost", "cost_micros", "agent_id"),
    "/api/v1/analytics/spending/by-provider": analytics_list(
        analytics(False), "cost", "cost_micros", "provider"
    ),
    "/api/v1/analytics/budget/status": ListSpec(
        analytics(True, narrowing=False),
        "budget",
        lambda item: item["budget_micros"],
        ANALYTICS_BAD,
        "agent_id",
        PERIOD | {"risk_counts"},
    ),
    "/api/v1/analytics/usage/tokens/by-agent": analytics_list(
        analytics(True), "total_tokens", "total_tokens", "agent_id"
    ),
    "/api/v1/analytics/usage/models": analytics_list(analytics(False), "cost", "cost_micros", "model"),
    "/api/v1/analytics/events": analytics_list(analytics(False), "timestamp", "timestamp", "event_id"),
}


# --- the contract ----------------------------------------------------------------------------------


def test_every_list_of_the_app_is_covered_and_its_filters_and_fields_documented(app: Litestar) -> None:
    assert paginated_lists(app) == set(LISTS)
    document = openapi.document(app)
    schemas = document["components"]["schemas"]
    for path, spec in LISTS.items():
        operation = document["paths"][path]["get"]
        documented = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
        assert documented == {"page", "per_page", "sort", *spec.bad}, path
        ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        page = schemas[ref.removeprefix("#/components/schemas/")]
        assert set(page["properties"]) == set(page["required"]) == {"data", "pagination", *spec.extra}, path


@pytest.fixture(scope="module")
async def admin(client: httpx.AsyncClient, pool: asyncpg.Pool) -> Person:
    return await make_person(client, pool, "admin")


@pytest.mark.parametrize("path", sorted(LISTS))
async def test_the_list_contract(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person, path: str
) -> None:
    spec = LISTS[path]
    ctx = Context(client, pool, admin, f"lc{secrets.token_hex(4)}")
    seeded = await spec.seed(ctx)
    assert len(seeded.ids) == 3

    async def listed(query: str) -> dict[str, Any]:
        response = await client.get(f"{path}?{query}", headers=admin.headers)
        assert response.status_code == 200, (query, response.text)
        body: dict[str, Any] = response.json()
        assert set(body) == {"data", "pagination", *spec.extra}, body
        return body

    async def shape(query: str) -> dict[str, Any]:
        """The list's data and pagination, without its extra fields."""
        body = await listed(query)
        return {"data": body["data"], "pagination": body["pagination"]}

    def page_ids(body: dict[str, Any]) -> list[str]:
        return [item[spec.id] for item in body["data"]]

    def pagination(page: int, per_page: int, total: int, pages: int) -> dict[str, int]:
        return {"page": page, "per_page": per_page, "total": total, "total_pages": pages}

    # empty, everything, pages without overlap or gap, a page past the end
    assert await shape(seeded.nothing) == {"data": [], "pagination": pagination(1, 50, 0, 0)}
    everything = await listed(seeded.narrow)
    assert sorted(page_ids(everything)) == sorted(seeded.ids)
    assert everything["pagination"] == pagination(1, 50, 3, 1)
    first, second = (
        await listed(f"{seeded.narrow}&per_page=2"),
        await listed(f"{seeded.narrow}&per_page=2&page=2"),
    )
    assert (first["pagination"], second["pagination"]) == (pagination(1, 2, 3, 2), pagination(2, 2, 3, 2))
    assert page_ids(first) + page_ids(second) == page_ids(everything)
    past = await listed(f"{seeded.narrow}&per_page=2&page=7")
    assert (past["data"], past["pagination"]) == ([], pagination(7, 2, 3, 2))
    assert {name: past[name] for name in spec.extra} == {name: everything[name] for name in spec.extra}
    for per_page in (1, 100):
        assert (await listed(f"{seeded.narrow}&per_page={per_page}"))["pagination"]["per_page"] == per_page

    # sorting, both ways (equal keys fall to a tiebreak in the same direction)
    ascending, descending = (
        await listed(f"{seeded.narrow}&sort={spec.sort}"),
        await listed(f"{seeded.narrow}&sort=-{spec.sort}"),
    )
    keys = [spec.key(item) for item in ascending["data"]]
    assert keys == sorted(keys), keys
    assert page_ids(descending) == page_ids(ascending)[::-1]

    # search: case-insensitive, and the user's wildcards are literal
    if "search" in spec.bad:
        assert sorted(page_ids(await listed(f"search={ctx.tag.upper()}"))) == sorted(seeded.ids)
        for wildcard in ("%25", "_"):
            assert (await listed(f"search={ctx.tag}{wildcard}"))["data"] == []

    # each filter narrows
    for query, expected in seeded.narrowing:
        full = query if "search=" in query else f"{seeded.narrow}&{query}"
        assert set(page_ids(await listed(full))) == expected, full

    # bad parameters: each alone, then all at once, reported together
    async def refused(query: str) -> set[str]:
        error = assert_error(
            await client.get(f"{path}?{query}", headers=admin.headers), 400, "VALIDATION_ERROR"
        )
        return set(error["fields"])

    for query, fields in (
        ("per_page=101", {"per_page"}),
        ("per_page=0", {"per_page"}),
        ("page=0&per_page=101", {"page", "per_page"}),
        ("page=abc&per_page=-1", {"page", "per_page"}),
        ("sort=nope", {"sort"}),
        (f"sort=-{spec.sort}x", {"sort"}),
    ):
        assert await refused(query) == fields, query
    for name, value in spec.bad.items():
        assert await refused(f"{name}={value}") == {name}, name
    every = "&".join(f"{name}={value}" for name, value in spec.bad.items())
    assert await refused(f"page=-1&per_page=1000&sort=secret&{every}") == {
        "page",
        "per_page",
        "sort",
        *spec.bad,
    }
