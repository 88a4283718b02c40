"""Analytics queries against figures recomputed here, independently, from the raw events in the
database: every endpoint, every period (events placed on each period's boundaries, and a few
duplicates), every filter, as an admin and as users who must never see another user's agents.
"""

import random
import secrets
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar

from control_plane.analytics import repository, service
from control_plane.analytics.repository import Scope, Window
from control_plane.lib import ratelimit
from control_plane.lib.ratelimit import RateLimits
from iron import ids
from iron.timefmt import iso
from tests.conftest import AgentHandle, open_lease
from tests.control_plane.helpers import (
    Person,
    Roles,
    assert_error,
    create_agent,
    create_project,
    create_provider,
    fingerprint,
    make_roles,
)
from tests.ledger_checks import assert_ledger_invariants, assert_rollups_match

BASE = "/api/v1/analytics"


@pytest.fixture(scope="module")
def queries(app: Litestar) -> list[str]:
    """Every query endpoint the app serves, below BASE."""
    found = [
        route.path.removeprefix(f"{BASE}/")
        for route in app.routes
        if route.path.startswith(f"{BASE}/") and any("GET" in h.http_methods for h in route.route_handlers)
    ]
    assert len(found) >= 10
    return found


MS = timedelta(milliseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    return (moment - EPOCH) // MS


# --- the reference: periods and figures worked out here --------------------------------------


def day_of(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def month_of(moment: datetime) -> datetime:
    return day_of(moment).replace(day=1)


def months_after(month: datetime, count: int) -> datetime:
    index = month.year * 12 + month.month - 1 + count
    return month.replace(year=index // 12, month=index % 12 + 1)


def customs(now: datetime) -> dict[str, tuple[datetime, datetime]]:
    """Custom ranges: not aligned to anything, and one spanning a whole month."""
    today = day_of(now)
    return {
        "ragged": (
            today - timedelta(days=40) + timedelta(hours=5, minutes=17, seconds=23, milliseconds=456),
            today - timedelta(days=1) + timedelta(hours=13, minutes=2, milliseconds=1),
        ),
        "months": (months_after(month_of(now), -2) - timedelta(days=3) + timedelta(hours=7), now),
    }


def named_period(name: str, now: datetime) -> tuple[datetime, datetime]:
    today, month = day_of(now), month_of(now)
    return {
        "today": (today, today + timedelta(days=1)),
        "yesterday": (today - timedelta(days=1), today),
        "last-7-days": (today - timedelta(days=6), today + timedelta(days=1)),
        "last-30-days": (today - timedelta(days=29), today + timedelta(days=1)),
        "this-month": (month, months_after(month, 1)),
        "last-month": (months_after(month, -1), month),
    }[name]


@dataclass(frozen=True)
class Event:
    agent_id: str
    event_id: str
    cost: int
    input_tokens: int
    output_tokens: int
    model: str
    provider: str
    status: str
    latency_ms: int | None
    at: datetime


@dataclass(frozen=True)
class Db:
    """The raw rows, as the database holds them now."""

    events: list[Event]
    agents: dict[str, asyncpg.Record]
    providers: dict[str, asyncpg.Record]

    @classmethod
    async def read(cls, pool: asyncpg.Pool) -> "Db":
        events = [
            Event(
                r["agent_id"],
                r["event_id"],
                r["cost_micros"],
                r["input_tokens"],
                r["output_tokens"],
                r["model"],
                r["provider"],
                r["status"],
                r["latency_ms"],
                r["occurred_at"],
            )
            for r in await pool.fetch("SELECT * FROM usage_events")
        ]
        agents = {r["id"]: r for r in await pool.fetch("SELECT * FROM agents")}
        providers = {r["id"]: r for r in await pool.fetch("SELECT * FROM providers")}
        return cls(events, agents, providers)


@dataclass(frozen=True)
class Ask:
    """One query: who asks, for which period, with which filters."""

    who: str  # admin, owner, other, viewer
    period: str  # a period name, or custom:<name>
    filters: tuple[tuple[str, str], ...] = ()

    def params(self, now: datetime) -> dict[str, str]:
        query = dict(self.filters)
        if self.period.startswith("custom:"):
            start, end = customs(now)[self.period.removeprefix("custom:")]
            query.update({"from": iso(start), "to": iso(end)})
        else:
            query["period"] = self.period
        return query


def half_up(value: float | Decimal) -> int:
    return int(Decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class Reference:
    """What the answer to an :class:`Ask` must be, from :class:`Db` alone."""

    def __init__(self, db: Db, users: dict[str, str | None], ask: Ask, now: datetime) -> None:
        self.db, self.ask, self.now = db, ask, now
        owner = users[ask.who]  # None: an admin
        filters = dict(ask.filters)
        self.agents = {
            agent_id
            for agent_id, agent in db.agents.items()
            if (owner is None or agent["owner_id"] == owner)
            and filters.get("agent_id", agent_id) == agent_id
            and ("project_id" not in filters or agent["project_id"] == filters["project_id"])
        }
        labels = None
        if "provider_id" in filters:
            provider = db.providers[filters["provider_id"]]
            labels = {provider["type"].lower(), provider["name"].lower()}
        scoped = [
            e
            for e in db.events
            if e.agent_id in self.agents and (labels is None or e.provider.lower() in labels)
        ]
        if ask.period == "all-time":
            first = min((e.at for e in scoped), default=now)
            last = max([now, *(e.at for e in scoped)])
            self.start, self.end = month_of(first), months_after(month_of(last), 1)
        elif ask.period.startswith("custom:"):
            self.start, self.end = customs(now)[ask.period.removeprefix("custom:")]
        else:
            self.start, self.end = named_period(ask.period, now)
        self.events = [e for e in scoped if self.start <= e.at < self.end]

    @property
    def period(self) -> dict[str, str]:
        name = "custom" if self.ask.period.startswith("custom:") else self.ask.period
        return {"name": name, "from": iso(self.start), "to": iso(self.end)}

    def grouped(self, key: Callable[[Event], Any]) -> dict[Any, list[Event]]:
        groups: dict[Any, list[Event]] = defaultdict(list)
        for e in self.events:
            groups[key(e)].append(e)
        return groups


def usd(micros: int, places: int = 2) -> float:
    return float((Decimal(micros) / 1_000_000).quantize(Decimal(1).scaleb(-places)))


def share(part: int, whole: int) -> float:
    return round(100 * part / whole, 2) if whole else 0.0


# --- the data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    roles: Roles
    agents: dict[str, AgentHandle]  # a1, a2 (the owner's; a3 too, deleted), b1 (the other user's)
    project: str
    custom_provider: str  # id of a provider of type custom, whose name calls are labelled with
    openai_provider: str
    sent: dict[tuple[str, str], int]  # (agent, event id) -> cost of its first arrival
    now: datetime


def moments(now: datetime, rng: random.Random) -> list[datetime]:
    """Every period's edges (and a millisecond either side), then random times over ~75 days."""
    edges = []
    for name in ("today", "yesterday", "last-7-days", "last-30-days", "this-month", "last-month"):
        edges += named_period(name, now)
    for start, end in customs(now).values():
        edges += [start, end]
    found = [edge + delta for edge in edges for delta in (-MS, timedelta(0), MS)]
    found += [
        day_of(now) - timedelta(days=75) + timedelta(seconds=rng.uniform(0, 77 * 86_400)) for _ in range(70)
    ]
    return [moment.replace(microsecond=moment.microsecond // 1000 * 1000) for moment in found]


@pytest.fixture(scope="module")
async def world(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], provider_id: str
) -> World:
    rng = random.Random(2026)
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as precise as the API
    roles = await make_roles(client, pool)
    project = (await create_project(client, admin_headers))["id"]
    custom = await create_provider(client, admin_headers, "custom")
    agents = {
        "a1": await create_agent(client, roles.owner.headers, budget=40, project_id=project),
        "a2": await create_agent(client, roles.owner.headers, budget=0),
        "a3": await create_agent(client, roles.owner.headers, budget=100),
        "b1": await create_agent(client, roles.other.headers, budget=25, project_id=project),
    }
    # the provider type "custom" is left out: other tests count the calls labelled with it
    labels = ["openai", "OpenAI", custom["name"].upper(), custom["name"], f"unlisted-{secrets.token_hex(3)}"]
    sent: dict[tuple[str, str], int] = {}
    for name, agent in agents.items():
        lease = (await open_lease(client, agent, 5))["lease_id"] if name != "a2" else None
        events, reports = [], []
        for n, moment in enumerate(moments(now, rng)):
            failed = rng.random() < 0.1
            cost = 0 if failed and rng.random() < 0.7 else rng.randint(1, 300_000)
            event_id = f"{name}-{n}"
            sent[(agent.id, event_id)] = cost
            call = {
                "event_id": event_id,
                "event_type": "llm_request_failed" if failed else "llm_request_completed",
                "timestamp_ms": epoch_ms(moment),
                "cost_micros": cost,
                "input_tokens": rng.randint(0, 5000),
                "output_tokens": rng.randint(0, 2000),
                "model": rng.choice(["m-small", "m-large"]),
                "provider": rng.choice(labels),
                "latency_ms": rng.choice([None, rng.randint(10, 9000)]),
            }
            if lease is not None and n % 3 == 0:
                reports.append(call)
            else:
                events.append(call)
        if reports:  # a third through the budget protocol, first
            body = {"lease_id": lease, "reports": [as_report(call) for call in reports]}
            response = await client.post("/api/v1/budget/report", headers=agent.headers, json=body)
            assert response.status_code == 200, response.text
        # then the rest as analytics events, with some of the reported calls again at another time
        # and cost: duplicates, never counted
        events += [{**call, "timestamp_ms": epoch_ms(now), "cost_micros": 1} for call in reports[:5]]
        response = await client.post(f"{BASE}/events", headers=agent.headers, json={"events": events})
        assert response.status_code == 202, response.text
        assert response.json()["duplicates"] == min(len(reports), 5)
        await assert_ledger_invariants(pool, agent.id)
    deleted = await client.delete(f"/api/v1/agents/{agents['a3'].id}", headers=roles.owner.headers)
    assert deleted.status_code == 200, deleted.text
    await assert_rollups_match(pool, None)
    return World(roles, agents, project, custom["id"], provider_id, sent, now)


def as_report(call: dict[str, Any]) -> dict[str, Any]:
    """The same call as a budget-protocol usage report."""
    return {
        "request_id": call["event_id"],
        "status": call["event_type"].removeprefix("llm_request_"),
        "timestamp": iso(EPOCH + call["timestamp_ms"] * MS),
        "cost_usd": call["cost_micros"] / 1e6,
        **{key: call[key] for key in ("input_tokens", "output_tokens", "model", "provider", "latency_ms")},
    }


def users_of(world: World) -> dict[str, str | None]:
    return {
        "admin": None,
        "owner": world.roles.owner.id,
        "other": world.roles.other.id,
        "viewer": world.roles.viewer.id,
    }


def headers_of(world: World, admin_headers: dict[str, str], who: str) -> dict[str, str]:
    people: dict[str, Person] = {
        "owner": world.roles.owner,
        "other": world.roles.other,
        "viewer": world.roles.viewer,
    }
    return admin_headers if who == "admin" else people[who].headers


def asks(world: World) -> list[Ask]:
    periods = [
        "today",
        "yesterday",
        "last-7-days",
        "last-30-days",
        "this-month",
        "last-month",
        "all-time",
        "custom:ragged",
        "custom:months",
    ]
    filters: list[tuple[tuple[str, str], ...]] = [
        (),
        (("agent_id", world.agents["a1"].id),),
        (("agent_id", world.agents["a3"].id),),  # deleted: its history stays
        (("project_id", world.project),),
        (("provider_id", world.custom_provider),),
        (("provider_id", world.openai_provider), ("project_id", world.project)),
    ]
    found = [Ask(who, period, f) for who in ("admin", "owner") for period in periods for f in filters]
    found += [Ask(who, period) for who in ("other", "viewer") for period in periods]
    found += [
        Ask("other", period, (("agent_id", world.agents["b1"].id),))
        for period in ("all-time", "custom:ragged")
    ]
    return found


# --- comparing -----------------------------------------------------------------------------------


async def get_all(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, params: dict[str, str]
) -> dict[str, Any]:
    """Every page of a list (100 a page), concatenated; a page's pagination is checked on the way."""
    data: list[Any] = []
    page = 1
    while True:
        response = await client.get(
            f"{BASE}/{path}", headers=headers, params={**params, "per_page": "100", "page": str(page)}
        )
        assert response.status_code == 200, (path, params, response.text)
        body: dict[str, Any] = response.json()
        total = body["pagination"]["total"]
        assert body["pagination"] == {
            "page": page,
            "per_page": 100,
            "total": total,
            "total_pages": -(-total // 100),
        }
        data += body["data"]
        if page >= body["pagination"]["total_pages"]:
            body["data"] = data
            assert len(data) == total, (path, params)
            return body
        page += 1


def assert_ordered(
    rows: list[dict[str, Any]], key: str, expected: Iterable[Any], descending: bool = True
) -> None:
    """The rows come sorted by ``key`` (ties in any order) and are exactly ``expected``."""
    values = [row[key] for row in rows]
    assert values == sorted(values, reverse=descending), key
    assert sorted(map(repr, rows)) == sorted(map(repr, expected))


def check_total(ref: Reference, body: dict[str, Any]) -> None:
    cost = sum(e.cost for e in ref.events)
    assert body == {
        "period": ref.period,
        "requests": len(ref.events),
        "cost_usd": usd(cost),
        "cost_micros": cost,
    }


def check_by_agent(ref: Reference, body: dict[str, Any]) -> None:
    whole = sum(e.cost for e in ref.events)
    expected = [
        {
            "agent_id": agent_id,
            "agent_name": ref.db.agents[agent_id]["name"],
            "requests": len(group),
            "cost_usd": usd(cost := sum(e.cost for e in group)),
            "cost_micros": cost,
            "share_percent": share(cost, whole),
        }
        for agent_id, group in ref.grouped(lambda e: e.agent_id).items()
    ]
    assert_ordered(body["data"], "cost_micros", expected)


def check_by_provider(ref: Reference, body: dict[str, Any]) -> None:
    whole = sum(e.cost for e in ref.events)
    expected = [
        {
            "provider": label,
            "provider_ids": sorted(
                pid for pid, p in ref.db.providers.items() if label in (p["type"].lower(), p["name"].lower())
            ),
            "requests": len(group),
            "cost_usd": usd(cost := sum(e.cost for e in group)),
            "cost_micros": cost,
            "share_percent": share(cost, whole),
        }
        for label, group in ref.grouped(lambda e: e.provider.lower()).items()
    ]
    assert_ordered(body["data"], "cost_micros", expected)


def check_average(ref: Reference, body: dict[str, Any]) -> None:
    costs = [e.cost for e in ref.events]
    exact = half_up(statistics.median(costs)) if costs else None
    expected: dict[str, Any] = {
        "period": ref.period,
        "requests": len(costs),
        "cost_usd": usd(sum(costs)),
        "cost_micros": sum(costs),
        "average_micros": half_up(Decimal(sum(costs)) / len(costs)) if costs else None,
        "min_micros": min(costs, default=None),
        "max_micros": max(costs, default=None),
    }
    for key in ("average", "min", "max"):
        micros = expected[f"{key}_micros"]
        expected[f"{key}_usd"] = None if micros is None else usd(micros, 6)
    median = body.pop("median_micros"), body.pop("median_usd"), body.pop("median_exact")
    assert body == expected
    if not costs:
        assert median == (None, None, None)
    elif median[2]:
        assert median[:2] == (exact, usd(exact, 6))
    else:  # from histograms: only above the exact limit, and within 4.5 %
        assert len(costs) > service.EXACT_MEDIAN_LIMIT
        assert abs(median[0] - exact) <= 0.045 * exact


def risk(spent: int, budget: int) -> str:
    if spent >= budget:
        return "exhausted"
    for band, percent in (("critical", 95), ("high", 80), ("medium", 50)):
        if spent * 100 >= budget * percent:
            return band
    return "low"


def check_status(ref: Reference, body: dict[str, Any]) -> None:
    period_cost = {
        agent_id: sum(e.cost for e in group) for agent_id, group in ref.grouped(lambda e: e.agent_id).items()
    }
    expected = []
    for agent_id in ref.agents:
        agent = ref.db.agents[agent_id]
        if agent["status"] == "deleted":
            continue
        budget, spent = agent["budget_micros"], agent["spent_micros"]
        remaining = budget - spent - agent["outstanding_micros"]
        expected.append(
            {
                "agent_id": agent_id,
                "agent_name": agent["name"],
                "budget_usd": usd(budget),
                "budget_micros": budget,
                "spent_usd": usd(spent),
                "spent_micros": spent,
                "remaining_usd": usd(remaining),
                "remaining_micros": remaining,
                "percent_used": share(spent, budget) if budget else None,
                "risk": risk(spent, budget),
                "period_cost_usd": usd(period_cost.get(agent_id, 0)),
                "period_cost_micros": period_cost.get(agent_id, 0),
            }
        )
    rows = body["data"]
    ratios = [
        row["spent_micros"] / row["budget_micros"] if row["budget_micros"] else float("inf") for row in rows
    ]
    assert ratios == sorted(ratios, reverse=True)
    assert sorted(map(repr, rows)) == sorted(map(repr, expected))
    counts = {
        band: sum(row["risk"] == band for row in expected)
        for band in ("low", "medium", "high", "critical", "exhausted")
    }
    assert body["risk_counts"] == counts


def check_requests(ref: Reference, body: dict[str, Any]) -> None:
    failed = sum(e.status == "failed" for e in ref.events)
    total = len(ref.events)
    assert body == {
        "period": ref.period,
        "requests": total,
        "completed": total - failed,
        "failed": failed,
        "success_rate": share(total - failed, total) if total else None,
    }


def check_tokens(ref: Reference, body: dict[str, Any]) -> None:
    expected = [
        {
            "agent_id": agent_id,
            "agent_name": ref.db.agents[agent_id]["name"],
            "requests": len(group),
            "input_tokens": sum(e.input_tokens for e in group),
            "output_tokens": sum(e.output_tokens for e in group),
            "total_tokens": sum(e.input_tokens + e.output_tokens for e in group),
        }
        for agent_id, group in ref.grouped(lambda e: e.agent_id).items()
    ]
    assert_ordered(body["data"], "total_tokens", expected)


def check_models(ref: Reference, body: dict[str, Any]) -> None:
    expected = []
    for (provider, model), group in ref.grouped(lambda e: (e.provider.lower(), e.model)).items():
        latencies = [e.latency_ms for e in group if e.latency_ms is not None]
        expected.append(
            {
                "provider": provider,
                "model": model,
                "requests": len(group),
                "failed": sum(e.status == "failed" for e in group),
                "input_tokens": sum(e.input_tokens for e in group),
                "output_tokens": sum(e.output_tokens for e in group),
                "cost_usd": usd(cost := sum(e.cost for e in group)),
                "cost_micros": cost,
                "average_latency_ms": round(sum(latencies) / len(latencies), 1) if latencies else None,
            }
        )
    assert_ordered(body["data"], "requests", expected)


def check_events(ref: Reference, body: dict[str, Any]) -> None:
    assert body["pagination"]["total"] == len(ref.events)
    newest = sorted(ref.events, key=lambda e: e.at, reverse=True)[:50]
    rows = body["data"]
    assert [row["timestamp"] for row in rows] == [iso(e.at) for e in newest]
    by_id = {(e.agent_id, e.event_id): e for e in ref.events}
    for row in rows:
        e = by_id[(row["agent_id"], row["event_id"])]
        assert (row["cost_micros"], row["model"], row["provider"], row["latency_ms"]) == (
            e.cost,
            e.model,
            e.provider,
            e.latency_ms,
        )
        assert row["event_type"] == f"llm_request_{e.status}"


def check_timeseries(ref: Reference, body: dict[str, Any], bucket: str) -> None:
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    start = ref.start.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        start = day_of(start)
    expected = {}
    moment = start
    while moment < ref.end:
        expected[moment] = [0, 0]
        moment += step
    for e in ref.events:
        slot = e.at.replace(minute=0, second=0, microsecond=0) if bucket == "hour" else day_of(e.at)
        expected[slot][0] += e.cost
        expected[slot][1] += 1
    assert body == {
        "period": ref.period,
        "bucket": bucket,
        "points": [
            {"start": iso(at), "cost_usd": usd(cost), "cost_micros": cost, "requests": n}
            for at, (cost, n) in expected.items()
        ],
    }


# --- the tests -----------------------------------------------------------------------------------


async def test_every_query_equals_the_figures_recomputed_from_the_raw_events(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], world: World
) -> None:
    db = await Db.read(pool)
    stored = {(e.agent_id, e.event_id): e.cost for e in db.events}
    assert {key: stored[key] for key in world.sent} == world.sent  # each once, as first sent
    users = users_of(world)
    checked = 0
    for ask in asks(world):
        ref = Reference(db, users, ask, world.now)
        headers, params = headers_of(world, admin_headers, ask.who), ask.params(world.now)
        lists = {
            "spending/by-agent": check_by_agent,
            "spending/by-provider": check_by_provider,
            "budget/status": check_status,
            "usage/tokens/by-agent": check_tokens,
            "usage/models": check_models,
        }
        for path, check in lists.items():
            body = await get_all(client, headers, path, params)
            assert body["period"] == ref.period, (ask, path)
            check(ref, body)
        singles = {
            "spending/total": check_total,
            "spending/avg-per-request": check_average,
            "usage/requests": check_requests,
        }
        for path, check in singles.items():
            response = await client.get(f"{BASE}/{path}", headers=headers, params=params)
            assert response.status_code == 200, (ask, path, response.text)
            check(ref, response.json())
        events = await client.get(f"{BASE}/events", headers=headers, params=params)
        assert events.status_code == 200, (ask, events.text)
        check_events(ref, events.json())
        for bucket, most in (("hour", 93 * 24), ("day", 3660)):
            response = await client.get(
                f"{BASE}/spending/timeseries", headers=headers, params={**params, "bucket": bucket}
            )
            span = (ref.end - ref.start) / (timedelta(hours=1) if bucket == "hour" else timedelta(days=1))
            if span > most:
                assert assert_error(response, 400, "VALIDATION_ERROR")["fields"].keys() == {"bucket"}
            else:
                assert response.status_code == 200, (ask, response.text)
                check_timeseries(ref, response.json(), bucket)
        checked += 1
    assert checked == len(asks(world))


async def test_a_user_never_sees_another_users_agents(
    client: httpx.AsyncClient, admin_headers: dict[str, str], world: World, queries: list[str]
) -> None:
    theirs = {world.agents["b1"].id, world.agents["b1"].ic_token}
    mine = {world.agents[name].id for name in ("a1", "a2", "a3")}
    for who in ("owner", "viewer"):
        headers = headers_of(world, admin_headers, who)
        for path in queries:
            for params in ({"period": "all-time"}, {"period": "all-time", "project_id": world.project}):
                response = await client.get(f"{BASE}/{path}", headers=headers, params=params)
                assert response.status_code == 200, response.text
                assert not any(secret in response.text for secret in theirs), (who, path)
                seen = {row["agent_id"] for row in response.json().get("data", []) if "agent_id" in row}
                assert seen <= (mine if who == "owner" else set()), (who, path)
        refused = await client.get(
            f"{BASE}/spending/total", headers=headers, params={"agent_id": world.agents["b1"].id}
        )
        assert_error(refused, 404, "RESOURCE_NOT_FOUND")


async def test_events_on_a_period_boundary_belong_to_the_period_that_starts_there(
    client: httpx.AsyncClient, admin_headers: dict[str, str], fresh_agent: AgentHandle
) -> None:
    today = day_of(datetime.now(UTC))
    events = [
        {"at": today - MS, "cost": 1},
        {"at": today, "cost": 10},
        {"at": today + timedelta(days=1) - MS, "cost": 100},
        {"at": today + timedelta(days=1), "cost": 1000},
    ]
    body = {
        "events": [
            {
                "event_id": f"edge-{n}",
                "event_type": "llm_request_completed",
                "timestamp": iso(e["at"]),
                "model": "m",
                "provider": "openai",
                "input_tokens": 1,
                "output_tokens": 1,
                "cost_micros": e["cost"],
            }
            for n, e in enumerate(events)
        ]
    }
    assert (await client.post(f"{BASE}/events", headers=fresh_agent.headers, json=body)).status_code == 202
    totals = {}
    for period in ("yesterday", "today"):
        params = {"period": period, "agent_id": fresh_agent.id}
        response = await client.get(f"{BASE}/spending/total", headers=admin_headers, params=params)
        totals[period] = response.json()["cost_micros"]
    start = iso(today + timedelta(days=1) - MS)
    custom = {"from": start, "to": iso(today + timedelta(days=1)), "agent_id": fresh_agent.id}
    response = await client.get(f"{BASE}/spending/total", headers=admin_headers, params=custom)
    totals["last millisecond of today"] = response.json()["cost_micros"]
    assert totals == {"yesterday": 1, "today": 110, "last millisecond of today": 100}


@pytest.fixture
async def fresh_agent(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> AgentHandle:
    return await create_agent(client, admin_headers)


async def test_the_histogram_median_is_within_its_bound(
    client: httpx.AsyncClient, pool: asyncpg.Pool, fresh_agent: AgentHandle
) -> None:
    """Above the exact limit the median comes from cost histograms: asked directly for one (limit 0)."""
    rng = random.Random(11)
    costs = [int(rng.lognormvariate(9, 1.5)) for _ in range(3001)] + [0] * 40
    now = datetime.now(UTC)
    for start in range(0, len(costs), 1000):
        events = [
            {
                "event_id": f"median-{n}",
                "event_type": "llm_request_completed",
                "timestamp": iso(now - timedelta(minutes=n)),
                "model": "m",
                "provider": "openai",
                "input_tokens": 1,
                "output_tokens": 1,
                "cost_micros": cost,
            }
            for n, cost in enumerate(costs[start : start + 1000], start)
        ]
        response = await client.post(f"{BASE}/events", headers=fresh_agent.headers, json={"events": events})
        assert response.status_code == 202, response.text
    window = Window(Scope([fresh_agent.id]), now - timedelta(days=4), now + timedelta(seconds=1))
    exact = half_up(statistics.median(costs))
    async with repository.reading(pool) as conn:
        assert await service.median(conn, window, len(costs), min(costs), max(costs)) == (exact, True)
        estimate, is_exact = await service.median(
            conn, window, len(costs), min(costs), max(costs), exact_limit=0
        )
    assert is_exact is False
    assert abs(estimate - exact) <= 0.0443 * exact, (estimate, exact)
    assert service.estimated_median([(0, 3), (50, 1)], 0, 90) == 0  # the middle ranks hold cost 0
    assert service.estimated_median([(1, 1)], 1, 1) == 1


# --- refused ---------------------------------------------------------------------------------------


async def test_bad_parameters_are_400_naming_every_one(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str]
) -> None:
    before = await fingerprint(pool)
    cases: list[tuple[str, dict[str, str], set[str]]] = [
        (
            "events",
            {
                "period": "weekly",
                "to": "2026-13-01",
                "agent_id": "a1",
                "project_id": "proj_x",
                "provider_id": ids.new_id(ids.AGENT),
                "page": "0",
                "per_page": "500",
                "sort": "cost",
            },
            {"period", "to", "agent_id", "project_id", "provider_id", "page", "per_page", "sort"},
        ),
        ("spending/total", {"period": "today", "from": "2026-01-01"}, {"period"}),
        ("spending/total", {"to": "2026-01-01"}, {"to"}),
        ("spending/total", {"from": "2026-01-02", "to": "2026-01-01T23:59:59Z"}, {"to"}),
        ("spending/total", {"from": "1969-12-31T23:59:59Z", "to": "2201-01-01"}, {"from", "to"}),
        ("usage/requests", {"period": "today\u0000"}, {"period"}),
        ("spending/timeseries", {"bucket": "minute", "period": "forever"}, {"bucket", "period"}),
        ("spending/timeseries", {"bucket": "hour", "from": "2020-01-01", "to": "2020-04-04"}, {"bucket"}),
        ("budget/status", {"sort": "risk", "agent_id": ""}, {"sort", "agent_id"}),
    ]
    for path, params, fields in cases:
        response = await client.get(f"{BASE}/{path}", headers=admin_headers, params=params)
        error = assert_error(response, 400, "VALIDATION_ERROR")
        assert set(error["fields"]) == fields, (path, params, error)
    assert await fingerprint(pool) == before


async def test_unknown_filters_are_404(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    for name, prefix in (("agent_id", ids.AGENT), ("project_id", ids.PROJECT), ("provider_id", ids.PROVIDER)):
        response = await client.get(
            f"{BASE}/usage/models", headers=admin_headers, params={name: ids.new_id(prefix)}
        )
        assert_error(response, 404, "RESOURCE_NOT_FOUND")


async def test_queries_take_a_user_token_and_refuse_an_ic_token(
    client: httpx.AsyncClient, world: World, queries: list[str]
) -> None:
    for path in queries:
        assert_error(await client.get(f"{BASE}/{path}"), 401, "AUTH_INVALID_TOKEN")
        assert_error(
            await client.get(f"{BASE}/{path}", headers=world.agents["a1"].headers), 403, "PERMISSION_DENIED"
        )
        response = await client.get(f"{BASE}/{path}", headers={"Authorization": "Bearer not-a-token"})
        assert_error(response, 401, "AUTH_INVALID_TOKEN")


async def test_queries_are_rate_limited_as_analytics_and_ingestion_is_not(
    client: httpx.AsyncClient,
    app: Litestar,
    monkeypatch: pytest.MonkeyPatch,
    world: World,
    queries: list[str],
) -> None:
    handlers = {route.path: route for route in app.routes}
    for path in queries:
        (handler,) = [h for h in handlers[f"{BASE}/{path}"].route_handlers if "GET" in h.http_methods]
        assert ratelimit.category_of("GET", f"{BASE}/{path}", handler.opt) == ratelimit.ANALYTICS
    assert ratelimit.DEFAULT_RULES[ratelimit.ANALYTICS] == ratelimit.Rule(20, 60)
    monkeypatch.setitem(app.state, "rate_limits", RateLimits.parse("analytics=3/60"))
    person = world.roles.viewer
    statuses = [(await client.get(f"{BASE}/{path}", headers=person.headers)).status_code for path in queries]
    assert statuses == [200] * 3 + [429] * (len(queries) - 3)  # one count per user, over them all
    agent = world.agents["a2"]
    for _ in range(5):
        body = {
            "event_id": f"unlimited-{secrets.token_hex(4)}",
            "event_type": "llm_request_completed",
            "timestamp": iso(datetime.now(UTC)),
            "model": "m",
            "provider": "p",
            "input_tokens": 1,
            "output_tokens": 1,
            "cost_micros": 0,
        }
        assert (await client.post(f"{BASE}/events", headers=agent.headers, json=body)).status_code == 202
