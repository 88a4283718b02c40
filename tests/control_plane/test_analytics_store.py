"""The usage store underneath analytics: how a time range splits over the rollup grains, the
migration that moves existing usage into it, its list of tables, and a month's partition taking
its rows over from the default partition."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib import resources

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.analytics import periods
from control_plane.lib.migrations import apply_migrations
from iron import ids
from iron.embedded import ServiceUrls, scratch_database
from tests.ledger_checks import ALL_TABLES, assert_ledger_invariants, assert_rollups_match

moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))


@settings(max_examples=400, deadline=None)
@given(moments, moments, st.sampled_from(periods.GRAINS))
def test_a_range_splits_into_disjoint_aligned_pieces_that_cover_it(
    a: datetime, b: datetime, coarsest: periods.Grain
) -> None:
    start, end = min(a, b), max(a, b)
    pieces = periods.split(start, end, coarsest)
    assert set(pieces) <= {"raw", *periods.GRAINS[: periods.GRAINS.index(coarsest) + 1]}
    ranges = sorted((lo, hi) for found in pieces.values() for lo, hi in found if lo < hi)
    assert all(len(found) <= 2 for found in pieces.values())
    # together they are [start, end), without gap or overlap
    position = start
    for lo, hi in ranges:
        assert lo == position
        position = hi
    assert position == end or (not ranges and start == end)
    for grain, found in pieces.items():
        for lo, hi in found:
            if grain != "raw" and lo < hi:
                assert periods.floor(lo, grain) == lo, (grain, lo)
                assert periods.floor(hi, grain) == hi, (grain, hi)
    # and the events read one by one are less than two hours' worth
    assert sum((hi - lo for lo, hi in pieces["raw"]), timedelta()) < timedelta(hours=2)


@given(moments, st.sampled_from(periods.GRAINS), st.integers(-40, 40))
def test_buckets_step_from_one_start_to_the_next(moment: datetime, grain: periods.Grain, steps: int) -> None:
    start = periods.floor(moment, grain)
    assert start <= moment < periods.shift(start, grain)
    assert periods.floor(periods.shift(start, grain, steps), grain) == periods.shift(start, grain, steps)
    assert periods.shift(periods.shift(start, grain, steps), grain, -steps) == start
    assert periods.ceil(moment, grain) in (start, periods.shift(start, grain))


def test_dekads_are_thirds_of_a_month() -> None:
    day = datetime(2026, 2, 28, 23, 59, tzinfo=UTC)
    assert periods.floor(day, "dekad") == datetime(2026, 2, 21, tzinfo=UTC)
    assert periods.shift(datetime(2026, 2, 21, tzinfo=UTC), "dekad") == datetime(2026, 3, 1, tzinfo=UTC)
    starts = periods.buckets(datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 2, 11, 12, tzinfo=UTC), "dekad")
    assert [start.strftime("%m-%d") for start in starts] == ["01-01", "01-11", "01-21", "02-01", "02-11"]


# --- the migration ---------------------------------------------------------------------------


@pytest.fixture
async def before_analytics(service_urls: ServiceUrls) -> AsyncIterator[asyncpg.Pool]:
    """A database at migration 0004."""
    folder = resources.files("control_plane") / "migrations"
    async with (
        scratch_database(service_urls.database_url, "iron_migrate") as url,
        asyncpg.create_pool(url, min_size=1, max_size=1) as pool,
    ):
        await pool.execute(
            "CREATE TABLE schema_migrations (version TEXT PRIMARY KEY,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for version in ("0001_foundation", "0002_admin_surface", "0003_auth", "0004_resources"):
            await pool.execute((folder / f"{version}.sql").read_text())
            await pool.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        yield pool


async def test_the_migration_moves_existing_usage_into_the_partitioned_store(
    before_analytics: asyncpg.Pool,
) -> None:
    pool = before_analytics
    user, agent, lease = ids.new_id(ids.USER), ids.new_id(ids.AGENT), ids.new_id(ids.LEASE)
    now = datetime.now(UTC).replace(microsecond=0)
    await pool.execute(
        "INSERT INTO users (id, email, name, password_hash, role)"
        " VALUES ($1, 'old@example.com', 'Old', 'x', 'user')",
        user,
    )
    old_usage = [  # (event id, cost, timestamp, status)
        ("long-ago", 500, datetime(2001, 5, 6, 7, 8, 9, tzinfo=UTC), "completed"),
        ("last-month", 250, now - timedelta(days=35), "failed"),
        ("now", 125, now, "completed"),
    ]
    spent = sum(cost for _, cost, _, _ in old_usage)
    await pool.execute(
        "INSERT INTO agents (id, name, owner_id, budget_micros, spent_micros, outstanding_micros)"
        " VALUES ($1, 'old agent', $2, 10000, $3, $4)",
        agent,
        user,
        spent,
        1000 - spent,
    )
    await pool.execute(
        "INSERT INTO leases (id, agent_id, granted_micros, spent_micros, expires_at)"
        " VALUES ($1, $2, 1000, $3, $4)",
        lease,
        agent,
        spent,
        now + timedelta(hours=1),
    )
    await pool.executemany(
        "INSERT INTO usage_events (agent_id, event_id, lease_id, cost_micros, input_tokens, output_tokens,"
        " model, provider, status, latency_ms, occurred_at)"
        " VALUES ($1, $2, $3, $4, 10, 20, 'm', 'OpenAI', $5, 30, $6)",
        [(agent, event_id, lease, cost, status, at) for event_id, cost, at, status in old_usage],
    )

    async with pool.acquire() as conn:
        assert (await apply_migrations(conn))[0] == "0005_analytics"

    moved = await pool.fetch(
        "SELECT event_id, cost_micros, occurred_at, status, lease_id, source,"
        " tableoid::regclass::text AS partition FROM usage_events ORDER BY occurred_at"
    )
    assert [(r["event_id"], r["cost_micros"], r["occurred_at"], r["status"]) for r in moved] == [
        (event_id, cost, at, status) for event_id, cost, at, status in old_usage
    ]
    assert {r["lease_id"] for r in moved} == {lease}
    assert {r["source"] for r in moved} == {"budget"}
    month = now.strftime("%Y%m")
    assert [r["partition"] for r in moved] == [
        "usage_events_default",  # older than the window partitions are made for
        f"usage_events_p{(now - timedelta(days=35)).strftime('%Y%m')}",
        f"usage_events_p{month}",
    ]
    assert await pool.fetchval("SELECT count(*) FROM usage_event_ids WHERE agent_id = $1", agent) == 3
    assert await pool.fetchval("SELECT to_regclass('usage_events_0001')") is None
    await assert_rollups_match(pool, agent)
    await assert_rollups_match(pool, None)
    await assert_ledger_invariants(pool, agent)
    # the same call reported again after the move is a duplicate
    taken = await pool.fetchval(
        "INSERT INTO usage_event_ids VALUES ($1, 'now') ON CONFLICT DO NOTHING RETURNING event_id", agent
    )
    assert taken is None
    # the list of every table, which refused requests are checked against, is exact
    tables = await pool.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
    )
    assert {r["relname"] for r in tables} == {*ALL_TABLES, "schema_migrations"}


async def test_a_month_that_began_in_the_default_partition_moves_into_its_own(
    service_urls: ServiceUrls,
) -> None:
    """Rows of a month with no partition yet (a clock far ahead, say) land in the default
    partition; when the month's partition is made they move into it, and the rollups, which
    already count them, stay as they were."""
    async with (
        scratch_database(service_urls.database_url, "iron_partition") as url,
        asyncpg.create_pool(url, min_size=1, max_size=2) as pool,
    ):
        async with pool.acquire() as conn:
            await apply_migrations(conn)
        month = periods.shift(periods.floor(datetime.now(UTC), "month"), "month", -6)
        earlier = periods.shift(month, "month", -1)  # no partition either; its row must stay put
        name = f"usage_events_p{month:%Y%m}"
        assert await pool.fetchval("SELECT to_regclass($1)", name) is None
        events = [(f"e{n}", month + timedelta(days=n, hours=n)) for n in range(3)] + [("other", earlier)]
        await pool.executemany(
            "INSERT INTO usage_events (agent_id, event_id, cost_micros, input_tokens, output_tokens,"
            " model, provider, status, source, occurred_at)"
            " VALUES ('agent_x', $1, 100, 1, 2, 'm', 'openai', 'completed', 'analytics', $2)",
            events,
        )

        async def where() -> dict[str, str]:
            rows = await pool.fetch("SELECT event_id, tableoid::regclass::text AS part FROM usage_events")
            return {row["event_id"]: row["part"] for row in rows}

        assert set((await where()).values()) == {"usage_events_default"}
        rollups = await pool.fetch("SELECT * FROM usage_rollups ORDER BY grain, scope, bucket, shard")

        assert await pool.fetchval("SELECT usage_events_add_partition($1)", month + timedelta(days=9)) is True
        assert await where() == {"e0": name, "e1": name, "e2": name, "other": "usage_events_default"}
        assert await pool.fetch("SELECT * FROM usage_rollups ORDER BY grain, scope, bucket, shard") == rollups
        await assert_rollups_match(pool, None)
        assert await pool.fetchval("SELECT usage_events_add_partition($1)", month) is True  # made once
        await pool.execute(
            "INSERT INTO usage_events (agent_id, event_id, cost_micros, input_tokens, output_tokens,"
            " model, provider, status, source, occurred_at)"
            " VALUES ('agent_x', 'later', 100, 1, 2, 'm', 'openai', 'completed', 'analytics', $1)",
            month + timedelta(days=20),
        )
        assert (await where())["later"] == name
        await assert_rollups_match(pool, None)
