"""Retention of raw usage events (IRON_USAGE_EVENTS_RETENTION_MONTHS), on a database of its own
(dropping partitions would take other tests' events with them):

- the sweeper drops the months wholly before the horizon and old rows of the default partition,
  and leaves the rollups, the event ids and the ledger as they were: old totals do not change
  and a replay of a dropped call is still a duplicate;
- a partition a long query is reading is skipped, not waited for, and dropped by a later sweep;
- queries before the horizon: ends widened to whole hours, medians from the histograms, the
  event list starting at the horizon, each answer's period saying what was counted;
- the setting's bad values are refused at start.
"""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.analytics import periods
from control_plane.analytics import repository as usage_store
from control_plane.app import create_app
from control_plane.settings import Settings, SettingsError
from iron.embedded import ServiceUrls, scratch_database
from iron.timefmt import iso, utcnow
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, AgentHandle, login
from tests.control_plane.helpers import client_at, create_agent, event, fresh_ip, sweep_until, usage

RETENTION_MONTHS = 1


@dataclass(frozen=True)
class Store:
    database_url: str
    http: httpx.AsyncClient
    pool: asyncpg.Pool
    admin: dict[str, str]
    agent: AgentHandle
    horizon: datetime


@contextlib.asynccontextmanager
async def retaining_store(service_urls: ServiceUrls, env: dict[str, str]) -> AsyncIterator[Store]:
    """A control plane keeping one month of raw events before the current one, on a new database."""
    async with scratch_database(service_urls.database_url, "iron_test_retention") as url:
        settings = {**env, "DATABASE_URL": url, "IRON_USAGE_EVENTS_RETENTION_MONTHS": str(RETENTION_MONTHS)}
        application = create_app(Settings.from_env(settings))
        async with application.lifespan(), client_at(application, fresh_ip()) as http:
            admin = await login(http, ADMIN_EMAIL, ADMIN_PASSWORD)
            agent = await create_agent(http, admin, budget=1000)
            horizon = periods.raw_horizon(utcnow(), RETENTION_MONTHS)
            assert horizon is not None
            yield Store(url, http, application.state.pool, admin, agent, horizon)


async def send(store: Store, event_id: str, cost: float, at: datetime, status: int) -> None:
    body = event(event_id, cost, timestamp=iso(at))
    response = await store.http.post("/api/v1/analytics/events", headers=store.agent.headers, json=body)
    assert response.status_code == status, response.text


async def query(store: Store, path: str, **params: str) -> dict[str, Any]:
    response = await store.http.get(f"/api/v1/analytics/{path}", headers=store.admin, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def partitions(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch(
        "SELECT inhrelid::regclass::text AS name FROM pg_inherits WHERE inhparent = 'usage_events'::regclass"
    )
    return {row["name"] for row in rows}


async def snapshot(pool: asyncpg.Pool) -> dict[str, Any]:
    """What retention must leave as it was: rollups, event ids, the agents' ledger."""
    return {
        "rollups": await pool.fetch(
            "SELECT * FROM usage_rollups ORDER BY grain, scope, bucket, provider, model"
        ),
        "ids": await pool.fetch("SELECT * FROM usage_event_ids ORDER BY agent_id, event_id"),
        "agents": await pool.fetch("SELECT id, spent_micros, budget_micros FROM agents ORDER BY id"),
    }


def partition_of(moment: datetime) -> str:
    return f"usage_events_p{moment:%Y%m}"


async def test_old_months_go_and_totals_ids_and_ledger_stay(
    service_urls: ServiceUrls, env: dict[str, str]
) -> None:
    async with retaining_store(service_urls, env) as store:
        old_month = periods.shift(store.horizon, "month", -2)
        kept_month = store.horizon  # the oldest month kept
        at = old_month + timedelta(days=4, hours=10)
        await send(store, "old-a", 1, at + timedelta(minutes=10), 202)
        await send(store, "old-b", 2, at + timedelta(minutes=40), 202)
        await send(store, "old-c", 6, at + timedelta(hours=2), 202)
        await send(store, "ancient", 3, store.horizon - timedelta(days=3 * 365), 202)  # default partition
        await send(store, "kept", 4, kept_month + timedelta(days=1, hours=10), 202)
        names = await partitions(store.pool)
        assert {partition_of(old_month), partition_of(kept_month), "usage_events_default"} <= names
        before = await snapshot(store.pool)
        old_range = {"from": iso(old_month), "to": iso(periods.shift(old_month, "month"))}
        total_before = await query(store, "spending/total", **old_range)
        assert total_before["cost_micros"] == 9_000_000

        async def gone() -> bool:
            return await store.pool.fetchval("SELECT count(*) FROM usage_events") == 1

        await sweep_until(store.pool, gone, retention_months=RETENTION_MONTHS)
        left = await store.pool.fetch("SELECT event_id, tableoid::regclass::text AS part FROM usage_events")
        assert [(row["event_id"], row["part"]) for row in left] == [("kept", partition_of(kept_month))]
        names = await partitions(store.pool)
        assert partition_of(old_month) not in names
        assert {partition_of(kept_month), "usage_events_default"} <= names
        assert await snapshot(store.pool) == before
        assert await query(store, "spending/total", **old_range) == total_before

        # A replay of a dropped call, by either path, is still a duplicate: nothing charged again.
        await send(store, "old-a", 1, at + timedelta(minutes=10), 200)
        handshake = await store.http.post(
            "/api/v1/budget/handshake", headers=store.agent.headers, json={"requested_budget": 10}
        )
        assert handshake.status_code == 200, handshake.text
        replayed = usage(None, 6, "old-c", timestamp=iso(at + timedelta(hours=2)))
        report = {"lease_id": handshake.json()["lease_id"], "reports": [replayed]}
        replay = await store.http.post("/api/v1/budget/report", headers=store.agent.headers, json=report)
        assert replay.status_code == 200, replay.text
        assert (replay.json()["accepted"], replay.json()["duplicates"]) == (0, 1)
        after = await snapshot(store.pool)
        assert after["agents"] == before["agents"]
        assert after["ids"] == before["ids"]
        assert after["rollups"] == before["rollups"]


async def test_queries_before_the_horizon_say_what_they_counted(
    service_urls: ServiceUrls, env: dict[str, str]
) -> None:
    async with retaining_store(service_urls, env) as store:
        old_month = periods.shift(store.horizon, "month", -2)
        at = old_month + timedelta(days=4, hours=10)
        for n, (minute, cost) in enumerate(((10, 1), (40, 2), (130, 6))):
            await send(store, f"old-{n}", cost, at + timedelta(minutes=minute), 202)
        await send(store, "kept", 4, store.horizon + timedelta(days=1, hours=10), 202)

        # Sub-hour ends before the horizon widen to the hour, which the rollups hold.
        part = await query(
            store,
            "spending/total",
            **{"from": iso(at + timedelta(minutes=20)), "to": iso(at + timedelta(minutes=50))},
        )
        assert (part["period"]["from"], part["period"]["to"]) == (iso(at), iso(at + timedelta(hours=1)))
        assert (part["requests"], part["cost_micros"]) == (2, 3_000_000)
        # After the horizon a range is taken as given.
        exact_from = store.horizon + timedelta(days=1, hours=9, minutes=59)
        late = await query(
            store, "spending/total", **{"from": iso(exact_from), "to": iso(exact_from + timedelta(minutes=2))}
        )
        assert late["period"]["from"] == iso(exact_from)
        assert (late["requests"], late["cost_micros"]) == (1, 4_000_000)

        old_range = {"from": iso(old_month), "to": iso(periods.shift(old_month, "month"))}
        old = await query(store, "spending/avg-per-request", **old_range)
        assert old["median_exact"] is False
        assert abs(old["median_micros"] - 2_000_000) <= 0.045 * 2_000_000
        kept = await query(store, "spending/avg-per-request", **{"from": iso(store.horizon)})
        assert (kept["median_exact"], kept["median_micros"]) == (True, 4_000_000)

        events = await query(store, "events", **{"from": iso(old_month)})
        assert events["period"]["from"] == iso(store.horizon)
        assert [e["event_id"] for e in events["data"]] == ["kept"]
        assert events["pagination"]["total"] == 1
        before = await query(store, "events", **old_range)
        assert (before["data"], before["pagination"]["total"]) == ([], 0)
        assert before["period"]["from"] == before["period"]["to"] == old_range["to"]


async def test_a_partition_being_read_is_skipped_then_dropped_later(
    service_urls: ServiceUrls, env: dict[str, str]
) -> None:
    async with retaining_store(service_urls, env) as store:
        old_month = periods.shift(store.horizon, "month", -2)
        await send(store, "old", 1, old_month + timedelta(days=2), 202)
        reader = await asyncpg.connect(store.database_url)
        try:
            async with reader.transaction():
                await reader.fetch(f"SELECT * FROM {partition_of(old_month)}")  # holds its lock
                assert (
                    await usage_store.drop_months_before(store.pool, store.horizon, lock_timeout_ms=100) == 0
                )
                assert partition_of(old_month) in await partitions(store.pool)
            assert await usage_store.drop_months_before(store.pool, store.horizon) == 1
            assert partition_of(old_month) not in await partitions(store.pool)
            assert await usage_store.drop_months_before(store.pool, store.horizon) == 0
        finally:
            await reader.close()


moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))


@given(moments, moments, moments)
def test_ends_before_the_horizon_widen_to_whole_hours_and_others_stay(
    a: datetime, b: datetime, somewhen: datetime
) -> None:
    start, end = min(a, b), max(a, b) + timedelta(microseconds=1)
    horizon = periods.floor(somewhen, "month")
    lo, hi = periods.on_rollups(start, end, horizon)
    assert lo <= start
    assert hi >= end
    for asked, got in ((start, lo), (end, hi)):
        assert got == (periods.floor(got, "hour") if asked < horizon else asked)
    raw = periods.split(lo, hi)["raw"]
    assert all(piece_start >= horizon for piece_start, piece_end in raw if piece_start < piece_end)
    assert periods.on_rollups(start, end, None) == (start, end)


def test_the_horizon_is_whole_months_before_the_current_one() -> None:
    now = datetime(2026, 3, 15, 12, tzinfo=UTC)
    assert periods.raw_horizon(now, 0) is None
    assert periods.raw_horizon(now, 1) == datetime(2026, 2, 1, tzinfo=UTC)
    assert periods.raw_horizon(now, 14) == datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("value", ["-1", "1201"])  # other bad numbers: test_startup.py
def test_a_bad_retention_is_refused_at_start(env: dict[str, str], value: str) -> None:
    with pytest.raises(SettingsError, match="IRON_USAGE_EVENTS_RETENTION_MONTHS"):
        Settings.from_env({**env, "IRON_USAGE_EVENTS_RETENTION_MONTHS": value})


def test_retention_is_off_unless_set(env: dict[str, str]) -> None:
    assert Settings.from_env(env).usage_events_retention_months == 0
    assert (
        Settings.from_env({**env, "IRON_USAGE_EVENTS_RETENTION_MONTHS": ""}).usage_events_retention_months
        == 0
    )
    assert (
        Settings.from_env({**env, "IRON_USAGE_EVENTS_RETENTION_MONTHS": "13"}).usage_events_retention_months
        == 13
    )
