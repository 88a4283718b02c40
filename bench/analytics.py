"""Analytics at scale: every query endpoint's latency over a large usage store, and ingestion
throughput in batches.

``python -m bench.analytics [--events N --agents N --days N]`` (default 10,000,000 events from
1,000 agents over the last 90 days) starts PostgreSQL and Valkey (or uses ``DATABASE_URL`` /
``REDIS_URL``), a scratch database and a real control plane (rate limits off). Users, projects
and agents are written directly; the events are bulk-loaded with COPY, a day at a time, into
``usage_events`` and ``usage_event_ids``, so the rollups are built by the same trigger that
ingestion runs. Then every query endpoint is timed over HTTP (several periods and filters, as an
admin and as a user) and ingestion through ``POST /api/v1/analytics/events`` in batches. Results
go to ``bench/results/analytics.md`` and ``.json``.
"""

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
import msgspec
import uvloop

from bench.loadgen import percentile_ms
from control_plane.auth.secrets import hash_password
from iron import ids
from iron.analytics import QUERIES
from iron.embedded import default_data_root, scratch_database, services
from iron.processes import Children, start_control_planes
from iron.timefmt import iso, utcnow

HOST: Final = "127.0.0.1"
ADMIN: Final = ("bench@example.com", secrets.token_urlsafe(16))
PASSWORD: Final = secrets.token_urlsafe(16)  # every bench user's
PROVIDERS: Final = {
    "openai": ("gpt-4o", "gpt-4o-mini", "o3-mini"),
    "anthropic": ("claude-sonnet", "claude-haiku"),
    "mistral": ("mistral-large", "mistral-small"),
}
EVENT_COLUMNS: Final = (
    "agent_id",
    "event_id",
    "cost_micros",
    "input_tokens",
    "output_tokens",
    "model",
    "provider",
    "status",
    "latency_ms",
    "error_code",
    "source",
    "occurred_at",
)
SCENARIOS: Final = (
    "periods today, last-7-days, last-30-days, this-month, all-time and a custom from/to; "
    "provider, project and agent filters"
)
TARGET_P95_MS: Final = 100.0
TARGET_EVENTS_PER_S: Final = 20_000.0


@dataclass(frozen=True)
class Agent:
    id: str
    owner: int  # index into World.users
    provider: str
    models: tuple[str, ...]


@dataclass
class World:
    users: list[tuple[str, str]]  # (id, email)
    projects: list[str]
    providers: dict[str, str]  # label -> provider id
    agents: list[Agent]
    weights: list[float]  # cumulative, for picking an agent per event


# --- the data ----------------------------------------------------------------------------------


async def _api_setup(http: httpx.AsyncClient, projects: int) -> tuple[dict[str, str], list[str]]:
    login = await http.post("/api/v1/auth/login", json={"email": ADMIN[0], "password": ADMIN[1]})
    http.headers["Authorization"] = f"Bearer {login.raise_for_status().json()['user_token']}"
    providers = {}
    for label, models in PROVIDERS.items():
        made = await http.post(
            "/api/v1/providers",
            json={
                "name": f"{label}-main",
                "type": label,
                "endpoint": f"https://api.{label}.example/v1",
                "credentials": {"api_key": secrets.token_urlsafe(24)},
                "models": list(models),
            },
        )
        providers[label] = made.raise_for_status().json()["id"]
    made_projects = []
    for n in range(projects):
        project = await http.post("/api/v1/projects", json={"name": f"project-{n:03d}"})
        made_projects.append(project.raise_for_status().json()["id"])
    return providers, made_projects


async def _world(db: asyncpg.Connection, http: httpx.AsyncClient, args: argparse.Namespace) -> World:
    """Users and agents written directly (fast); providers and projects through the API."""
    rng = random.Random(args.seed)
    providers, projects = await _api_setup(http, max(1, args.agents // 100))
    password_hash = await hash_password(PASSWORD)
    users = [(ids.new_id(ids.USER), f"user-{n:04d}@bench.example") for n in range(args.users)]
    await db.copy_records_to_table(
        "users",
        records=[(uid, email, email, "user", password_hash) for uid, email in users],
        columns=("id", "email", "name", "role", "password_hash"),
    )
    agents, records, total = [], [], 0.0
    weights = []
    for n in range(args.agents):
        label = rng.choice(list(PROVIDERS))
        models = tuple(rng.sample(PROVIDERS[label], rng.randint(1, len(PROVIDERS[label]))))
        agent = Agent(ids.new_id(ids.AGENT), n % len(users), label, models)
        agents.append(agent)
        records.append((agent.id, f"agent-{n:05d}", users[agent.owner][0], projects[n % len(projects)], 0))
        total += rng.lognormvariate(0, 1)  # some agents are much busier than others
        weights.append(total)
    await db.copy_records_to_table(
        "agents", records=records, columns=("id", "name", "owner_id", "project_id", "budget_micros")
    )
    return World(users, projects, providers, agents, weights)


def _day(world: World, start: datetime, count: int, first: int, seed: int) -> tuple[list[Any], list[Any]]:
    """``count`` events in the 24 hours from ``start``: (usage_events rows, usage_event_ids rows)."""
    rng = random.Random(seed)
    picked = rng.choices(world.agents, cum_weights=world.weights, k=count)
    events, keys = [], []
    for n, agent in enumerate(picked, first):
        event_id = f"bench-{n}"
        failed = rng.random() < 0.02
        input_tokens = int(rng.lognormvariate(6.5, 1))
        output_tokens = int(rng.lognormvariate(5.5, 1))
        cost = 0 if failed else max(1, int((input_tokens * 2.5 + output_tokens * 10) * rng.uniform(0.5, 2)))
        events.append(
            (
                agent.id,
                event_id,
                cost,
                input_tokens,
                output_tokens,
                rng.choice(agent.models),
                agent.provider,
                "failed" if failed else "completed",
                int(rng.lognormvariate(6.8, 0.6)),
                "provider_timeout" if failed else None,
                "budget" if n % 3 else "analytics",
                start + timedelta(seconds=rng.random() * 86_400),
            )
        )
        keys.append((agent.id, event_id))
    return events, keys


async def _load(database_url: str, world: World, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    """COPY the events a day (24 hours up to ``now``) at a time; the next day is generated while the
    last one loads."""
    events_db, ids_db = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    first_day = now - timedelta(days=args.days)
    await events_db.execute(
        "SELECT usage_events_add_partition(d) FROM generate_series($1::timestamptz, $2, '1 month') AS d",
        first_day,
        now + timedelta(days=31),
    )
    per_day = [args.events // args.days + (1 if d < args.events % args.days else 0) for d in range(args.days)]
    started = time.perf_counter()
    try:
        upcoming = asyncio.create_task(asyncio.to_thread(_day, world, first_day, per_day[0], 0, args.seed))
        first = 0
        for day in range(args.days):
            events, keys = await upcoming
            first += per_day[day]
            if day + 1 < args.days:
                start = first_day + timedelta(days=day + 1)
                upcoming = asyncio.create_task(
                    asyncio.to_thread(_day, world, start, per_day[day + 1], first, args.seed + day + 1)
                )
            await asyncio.gather(
                events_db.copy_records_to_table("usage_events", records=events, columns=EVENT_COLUMNS),
                ids_db.copy_records_to_table(
                    "usage_event_ids", records=keys, columns=("agent_id", "event_id")
                ),
            )
        load_s = time.perf_counter() - started
        # The ledger: the bulk-loaded events are usage without a lease (overdrawn), and budgets
        # spread over every risk band.
        await events_db.execute(
            "UPDATE agents a SET spent_micros = s.cost, overdrawn_micros = s.cost,"
            " budget_micros = (s.cost * (0.8 + random() * 1.6))::bigint"
            " FROM (SELECT scope, sum(cost_micros) AS cost FROM usage_rollups"
            "  WHERE grain = 'month' AND scope <> '' GROUP BY scope) s WHERE a.id = s.scope"
        )
        await events_db.execute("VACUUM ANALYZE")
        sizes = await events_db.fetch(
            "SELECT t, pg_total_relation_size(t::regclass) AS bytes, (SELECT count(*) FROM usage_rollups"
            " WHERE t = 'usage_rollups') AS rows"
            " FROM unnest(ARRAY['usage_event_ids', 'usage_rollups']) AS t"
        )
        events_bytes = await events_db.fetchval(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
            " WHERE inhparent = 'usage_events'::regclass"
        )
    finally:
        await events_db.close()
        await ids_db.close()
    return {
        "events": args.events,
        "seconds": round(load_s, 1),
        "events_per_s": round(args.events / load_s),
        "rollup_rows": next(row["rows"] for row in sizes if row["t"] == "usage_rollups"),
        "mb": {
            "usage_events": round(int(events_bytes) / 2**20),
            **{row["t"]: round(row["bytes"] / 2**20) for row in sizes},
        },
    }


# --- queries -----------------------------------------------------------------------------------

ENDPOINTS: Final = QUERIES


def _scenarios(world: World, now: datetime) -> list[tuple[str, str, dict[str, str]]]:
    """(role, label, query parameters): periods of every kind, each filter, admin and user."""
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    custom = {
        "from": iso(day - timedelta(days=45, hours=-13, minutes=-27)),
        "to": iso(day - timedelta(days=2, hours=-7, minutes=-12)),
    }
    mine = [agent for agent in world.agents if agent.owner == 0]
    shared: list[tuple[str, dict[str, str]]] = [
        ("last-30-days", {}),
        ("today", {"period": "today"}),
        ("last-7-days", {"period": "last-7-days"}),
        ("this-month", {"period": "this-month"}),
        ("all-time", {"period": "all-time"}),
        ("custom from/to", custom),
        ("provider", {"provider_id": world.providers["openai"]}),
    ]
    admin = [
        *shared,
        ("project", {"project_id": world.projects[0]}),
        ("agent, all-time", {"agent_id": world.agents[0].id, "period": "all-time"}),
    ]
    user = [*shared, ("agent, all-time", {"agent_id": mine[0].id, "period": "all-time"})]
    return [("admin", label, q) for label, q in admin] + [("user", label, q) for label, q in user]


def _bucket(query: dict[str, str]) -> str:
    return "hour" if query.get("period") in {"today", "last-7-days"} else "day"


async def _measure_queries(
    http: httpx.AsyncClient, tokens: dict[str, str], world: World, now: datetime, repeat: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        samples: list[int] = []
        scenarios: dict[str, Any] = {}
        for role, label, query in _scenarios(world, now):
            params = {**query, "bucket": _bucket(query)} if endpoint.endswith("timeseries") else query
            headers = {"Authorization": f"Bearer {tokens[role]}"}
            timings = []
            for attempt in range(repeat + 1):  # the first is a warm-up
                started = time.perf_counter_ns()
                response = await http.get(f"/api/v1/analytics/{endpoint}", params=params, headers=headers)
                elapsed = time.perf_counter_ns() - started
                if response.status_code != 200:
                    raise RuntimeError(f"{endpoint} {params}: {response.status_code} {response.text[:300]}")
                if attempt:
                    timings.append(elapsed)
            timings.sort()
            samples += timings
            scenarios[f"{role}: {label}"] = {
                "p50_ms": round(percentile_ms(timings, 0.5), 2),
                "p95_ms": round(percentile_ms(timings, 0.95), 2),
            }
        samples.sort()
        worst = max(scenarios, key=lambda name: scenarios[name]["p95_ms"])
        results[endpoint] = {
            "requests": len(samples),
            "p50_ms": round(percentile_ms(samples, 0.5), 2),
            "p95_ms": round(percentile_ms(samples, 0.95), 2),
            "worst_scenario": worst,
            "scenarios": scenarios,
        }
    return results


# --- ingestion ---------------------------------------------------------------------------------


def _batches(run: str, clients: int, batches: int, size: int, now: datetime) -> list[list[bytes]]:
    """Pre-encoded request bodies, per client: fresh events of the last minute."""
    rng = random.Random(run)
    bodies: list[list[bytes]] = [[] for _ in range(clients)]
    for client in range(clients):
        for batch in range(batches):
            events = [
                {
                    "event_id": f"{run}-{client}-{batch}-{n}",
                    "event_type": "llm_request_completed",
                    "timestamp": iso(now - timedelta(seconds=rng.random() * 60)),
                    "model": "gpt-4o-mini",
                    "provider": "openai",
                    "input_tokens": rng.randint(100, 4000),
                    "output_tokens": rng.randint(10, 1000),
                    "cost_micros": rng.randint(100, 20_000),
                    "latency_ms": rng.randint(200, 3000),
                }
                for n in range(size)
            ]
            bodies[client].append(msgspec.json.encode({"events": events}))
    return bodies


async def _measure_ingestion(url: str, admin: httpx.AsyncClient, args: argparse.Namespace) -> dict[str, Any]:
    """Each client posts its agent's batches back to back (agents in parallel, as in production:
    one agent's batches are serialised by its ledger lock)."""
    tokens = []
    for n in range(args.ingest_clients):
        made = await admin.post("/api/v1/agents", json={"name": f"ingest-{n}", "budget": 1_000_000})
        tokens.append(made.raise_for_status().json()["ic_token"]["token"])
    run = secrets.token_hex(3)
    bodies = _batches(run, args.ingest_clients, args.ingest_batches, args.batch, utcnow())
    latencies: list[int] = []
    statuses: dict[int, int] = {}

    async def client(n: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[n]}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as http:
            for body in bodies[n]:
                started = time.perf_counter_ns()
                response = await http.post("/api/v1/analytics/events", content=body)
                latencies.append(time.perf_counter_ns() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(args.ingest_clients)))
    elapsed = time.perf_counter() - started
    events = args.ingest_clients * args.ingest_batches * args.batch
    latencies.sort()
    return {
        "events": events,
        "batch": args.batch,
        "clients": args.ingest_clients,
        "seconds": round(elapsed, 2),
        "events_per_s": round(events / elapsed),
        "batch_p50_ms": round(percentile_ms(latencies, 0.5), 1),
        "batch_p95_ms": round(percentile_ms(latencies, 0.95), 1),
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
    }


# --- the run -----------------------------------------------------------------------------------


async def _login(http: httpx.AsyncClient, email: str, password: str) -> str:
    response = await http.post("/api/v1/auth/login", json={"email": email, "password": password})
    token: str = response.raise_for_status().json()["user_token"]
    return token


async def _run(
    children: Children, redis_url: str, database_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    no_limits = {"IRON_RATE_LIMITS": "off"}  # the analytics class allows 20 queries a minute
    (url,) = await start_control_planes(children, database_url, redis_url, ADMIN, settings=no_limits)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        db = await asyncpg.connect(database_url)
        try:
            world = await _world(db, http, args)
        finally:
            await db.close()
        now = utcnow()
        loaded = await _load(database_url, world, args, now)
        tokens = {
            "admin": http.headers["Authorization"].removeprefix("Bearer "),
            "user": await _login(http, world.users[0][1], PASSWORD),
        }
        total = await http.get(
            "/api/v1/analytics/spending/total",
            params={"period": "all-time"},
            headers={"Authorization": f"Bearer {tokens['admin']}"},
        )
        loaded["all_time_requests_match"] = total.json()["requests"] == args.events
        queries = await _measure_queries(http, tokens, world, now, args.repeat)
        ingestion = await _measure_ingestion(url, http, args)
    worst_p95 = max(q["p95_ms"] for q in queries.values())
    return {
        "config": {
            "events": args.events,
            "agents": args.agents,
            "days": args.days,
            "users": args.users,
            "repeat": args.repeat,
        },
        "load": loaded,
        "queries": queries,
        "ingestion": ingestion,
        "targets": {
            "query_p95_ms": TARGET_P95_MS,
            "worst_query_p95_ms": worst_p95,
            "queries_met": worst_p95 <= TARGET_P95_MS,
            "ingest_events_per_s": TARGET_EVENTS_PER_S,
            "ingestion_met": ingestion["events_per_s"] >= TARGET_EVENTS_PER_S,
        },
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="iron-bench-analytics-"))
    with services(default_data_root() / "bench") as urls:
        async with scratch_database(urls.database_url, "iron_bench_analytics") as database_url:
            with Children(log_dir) as children:
                return await _run(children, urls.redis_url, database_url, args)


def _markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    load, ingest, targets = results["load"], results["ingestion"], results["targets"]
    lines = [
        "# Analytics at scale",
        "",
        f"`python -m bench.analytics --events {args.events} --agents {args.agents} --days {args.days}`: "
        f"{args.events:,} events from {args.agents:,} agents ({args.users} users) over the last "
        f"{args.days} days, bulk-loaded with COPY in {load['seconds']:,.0f} s ({load['events_per_s']:,} "
        f"events/s, rollups built by the ingestion trigger; {load['rollup_rows']:,} rollup rows; MB: "
        + ", ".join(f"{name} {mb:,}" for name, mb in load["mb"].items())
        + ").",
        "",
        f"Queries over HTTP against a real control plane, one at a time, {args.repeat} times per "
        f"scenario after a warm-up; scenarios: {SCENARIOS}, as an admin (every agent) and as a user "
        f"({args.agents // args.users} agents). Latency in ms; target p95 <= {TARGET_P95_MS:.0f}.",
        "",
        "| endpoint | p50 | p95 | worst scenario (its p95) | requests |",
        "|---|---|---|---|---|",
    ]
    for endpoint, q in results["queries"].items():
        worst = q["scenarios"][q["worst_scenario"]]["p95_ms"]
        lines.append(
            f"| {endpoint} | {q['p50_ms']:.1f} | {q['p95_ms']:.1f} | {q['worst_scenario']} ({worst:.1f}) "
            f"| {q['requests']} |"
        )
    lines += [
        "",
        f"Ingestion: {ingest['clients']} clients (one agent each) posting batches of {ingest['batch']} "
        f"events back to back: **{ingest['events_per_s']:,} events/s** ({ingest['events']:,} events in "
        f"{ingest['seconds']} s; batch p50 {ingest['batch_p50_ms']} ms, p95 {ingest['batch_p95_ms']} ms; "
        f"target >= {TARGET_EVENTS_PER_S:,.0f}).",
        "",
        f"Targets: every query p95 <= {TARGET_P95_MS:.0f} ms: "
        f"{'met' if targets['queries_met'] else 'NOT met'} (worst {targets['worst_query_p95_ms']} ms); "
        f"ingestion: {'met' if targets['ingestion_met'] else 'NOT met'}. "
        f"All-time request count equals the events loaded: {load['all_time_requests_match']}.",
        "",
        f"Python {results['machine']['python']}, {results['machine']['cpus']} CPUs, shared with other "
        "work (the machine is noisy: figures are from one run); client, control plane and "
        "PostgreSQL share the cores.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.analytics", description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--users", type=int, default=50, help="owners of the agents (default 50)")
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per query scenario")
    parser.add_argument("--batch", type=int, default=1000, help="events per ingestion request")
    parser.add_argument("--ingest-clients", type=int, default=4)
    parser.add_argument("--ingest-batches", type=int, default=50, help="batches per ingestion client")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if min(args.events, args.agents, args.days, args.users, args.repeat) < 1 or args.users > args.agents:
        parser.error("every count must be >= 1, and there must be no more users than agents")
    results = uvloop.run(bench(args))
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = _markdown(results, args)
    (args.out / "analytics.md").write_text(markdown)
    (args.out / "analytics.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown)
    return 0 if results["load"]["all_time_requests_match"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
