"""The audit log's read side on real PostgreSQL: admin only, filters, the list contract, and
streamed CSV/JSON exports that are well-formed, filtered and free of secrets."""

import csv
import io
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from iron import ids
from tests.control_plane.helpers import Person, assert_error, create_agent, make_person

LOGS = "/api/v1/audit-logs"
EXPORT = "/api/v1/audit-logs/export"
WHY = "The nightly evaluation run needs a bigger budget."
COLUMNS = [
    "id",
    "timestamp",
    "operation",
    "resource_type",
    "resource_id",
    "user_id",
    "user_role",
    "ip_address",
    "user_agent",
    "request_id",
    "changes",
    "metadata",
]


@pytest.fixture
async def admin(pool: asyncpg.Pool, client: httpx.AsyncClient) -> Person:
    return await make_person(client, pool, "admin")


async def seed(
    pool: asyncpg.Pool, resource_id: str, moments: list[datetime], user_id: str | None = None
) -> list[str]:
    """Entries at chosen moments, written as the recorder writes them; returns their ids."""
    made = [ids.new_id(ids.AUDIT) for _ in moments]
    await pool.executemany(
        "INSERT INTO audit_logs (id, timestamp, operation, resource_type, resource_id, user_id, user_role,"
        " changes, metadata) VALUES ($1, $2, 'AGENT_UPDATED', 'agent', $3, $4, 'admin',"
        ' \'{"before": {"name": "a"}, "after": {"name": "b"}}\', \'{"n": 1}\')',
        [(entry_id, moment, resource_id, user_id) for entry_id, moment in zip(made, moments, strict=True)],
    )
    return made


def csv_rows(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    reader = csv.reader(io.StringIO(response.text))
    header = next(reader)
    assert header == COLUMNS
    rows = [dict(zip(header, row, strict=True)) for row in reader]
    return rows


async def test_only_admins_read_the_log(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    for role in ("user", "viewer"):
        who = await make_person(client, pool, role)
        for path in (LOGS, f"{EXPORT}?format=json"):
            assert_error(await client.get(path, headers=who.headers), 403, "PERMISSION_DENIED")
    assert_error(await client.get(LOGS), 401, "AUTH_INVALID_TOKEN")
    assert_error(await client.get(EXPORT), 401, "AUTH_INVALID_TOKEN")


async def test_a_mutation_is_recorded_with_its_actor(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person
) -> None:
    dev = await make_person(client, pool, "user")
    agent = await create_agent(client, dev.headers, 10)
    created = await client.post(
        "/api/v1/budget-requests",
        headers={**dev.headers, "User-Agent": "iron-cli/1.0.0"},
        json={"agent_id": agent.id, "requested_budget": 20, "justification": WHY},
    )
    assert created.status_code == 201, created.text
    listed = (await client.get(f"{LOGS}?resource_id={created.json()['id']}", headers=admin.headers)).json()
    assert listed["pagination"]["total"] == 1
    (entry,) = listed["data"]
    assert ids.is_valid(ids.AUDIT, entry["id"])
    assert entry["timestamp"].endswith("Z")
    assert entry["operation"] == "BUDGET_REQUEST_CREATED"
    assert (entry["resource_type"], entry["user_id"], entry["user_role"]) == (
        "budget_request",
        dev.id,
        "user",
    )
    assert (entry["ip_address"], entry["user_agent"]) == ("127.0.0.1", "iron-cli/1.0.0")
    assert entry["request_id"] == created.headers["x-request-id"]
    assert entry["metadata"]["justification"] == WHY
    assert entry["metadata"]["requested_budget"] == 20.0
    assert "changes" not in entry  # a creation has no before/after


async def test_filters_and_the_list_contract(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person
) -> None:
    resource = ids.new_id(ids.AGENT)
    actor = ids.new_id(ids.USER)
    day = datetime(2031, 3, 14, tzinfo=UTC)
    moments = [day + timedelta(hours=h) for h in (1, 5, 23)] + [day + timedelta(days=1, hours=2)]
    made = await seed(pool, resource, moments, user_id=actor)
    tie = await seed(pool, resource, [day + timedelta(hours=5)] * 2)  # same moment: order falls to the id
    elsewhere = ids.new_id(ids.AGENT)
    other = await seed(pool, elsewhere, [day + timedelta(hours=2)], user_id=actor)

    async def listed(query: str) -> dict[str, Any]:
        response = await client.get(f"{LOGS}?{query}", headers=admin.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    newest_first = [made[3], made[2], *sorted([*tie, made[1]], reverse=True), made[0]]
    everything = await listed(f"resource_id={resource}")
    assert [e["id"] for e in everything["data"]] == newest_first
    assert everything["pagination"] == {"page": 1, "per_page": 50, "total": 6, "total_pages": 1}
    pages = [await listed(f"resource_id={resource}&per_page=4&page={n}") for n in (1, 2, 3)]
    assert [e["id"] for page in pages for e in page["data"]] == newest_first  # no overlap, no gap
    assert pages[2]["data"] == []
    assert pages[0]["pagination"] == {"page": 1, "per_page": 4, "total": 6, "total_pages": 2}
    oldest_first = await listed(f"resource_id={resource}&sort=timestamp")
    assert [e["id"] for e in oldest_first["data"]] == newest_first[::-1]

    by_user = await listed(f"user_id={actor}")
    assert {e["id"] for e in by_user["data"]} == set(made + other)
    both = await listed(f"user_id={actor}&resource_type=agent&resource_id={elsewhere}")
    assert [e["id"] for e in both["data"]] == other
    assert (await listed(f"resource_id={resource}&operation=agent_updated"))["pagination"]["total"] == 6
    assert (await listed(f"resource_id={resource}&operation=AGENT_DELETED"))["pagination"]["total"] == 0
    assert (await listed(f"resource_id={resource}&resource_type=provider"))["pagination"]["total"] == 0

    # a bare date is that whole day (UTC); date-times are inclusive bounds
    whole_day = await listed(f"resource_id={resource}&start_date=2031-03-14&end_date=2031-03-14")
    assert {e["id"] for e in whole_day["data"]} == set(made[:3] + tie)
    bounded = await listed(
        f"resource_id={resource}&start_date=2031-03-14T05:00:00Z&end_date=2031-03-14T23:00:00.000Z"
    )
    assert {e["id"] for e in bounded["data"]} == {made[1], made[2], *tie}
    offset = await listed(f"resource_id={resource}&start_date=2031-03-15T03:00:00%2B02:00")
    assert [e["id"] for e in offset["data"]] == [made[3]]  # 01:00 UTC on the 15th
    assert (await listed(f"resource_id={resource}&end_date=2031-03-14T00:59:59"))["data"] == []

    bad = await client.get(
        f"{LOGS}?page=0&per_page=101&sort=-operation&user_id=bob&start_date=yesterday"
        f"&resource_type={'x' * 51}&operation=",
        headers=admin.headers,
    )
    fields = assert_error(bad, 400, "VALIDATION_ERROR")["fields"]
    assert set(fields) == {"page", "per_page", "sort", "user_id", "start_date", "resource_type", "operation"}
    backwards = await client.get(f"{LOGS}?start_date=2031-03-15&end_date=2031-03-14", headers=admin.headers)
    assert set(assert_error(backwards, 400, "VALIDATION_ERROR")["fields"]) == {"end_date"}


async def test_exports_are_well_formed_filtered_and_match_the_list(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person
) -> None:
    resource = ids.new_id(ids.AGENT)
    start = datetime(2032, 1, 1, tzinfo=UTC)
    made = await seed(pool, resource, [start + timedelta(minutes=n) for n in range(5)])
    await seed(pool, ids.new_id(ids.AGENT), [start])  # not in the filter
    listed = (await client.get(f"{LOGS}?resource_id={resource}", headers=admin.headers)).json()["data"]

    as_csv = await client.get(f"{EXPORT}?format=csv&resource_id={resource}", headers=admin.headers)
    rows = csv_rows(as_csv)
    assert [r["id"] for r in rows] == made[::-1]
    assert 'attachment; filename="audit-logs-' in as_csv.headers["content-disposition"]
    assert as_csv.headers["content-disposition"].endswith('.csv"')
    first = rows[0]
    assert first["timestamp"] == listed[0]["timestamp"]
    assert (first["operation"], first["resource_type"], first["resource_id"]) == (
        "AGENT_UPDATED",
        "agent",
        resource,
    )
    assert (first["user_id"], first["ip_address"]) == ("", "")  # a system entry: empty, not "None"
    assert (
        json.loads(first["changes"])
        == listed[0]["changes"]
        == {"before": {"name": "a"}, "after": {"name": "b"}}
    )
    assert json.loads(first["metadata"]) == {"n": 1}
    assert (
        csv_rows(await client.get(f"{EXPORT}?resource_id={resource}", headers=admin.headers)) == rows
    )  # csv default

    as_json = await client.get(f"{EXPORT}?format=json&resource_id={resource}", headers=admin.headers)
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"].startswith("application/json")
    assert as_json.json() == listed

    window = await client.get(
        f"{EXPORT}?format=json&resource_id={resource}&start_date=2032-01-01T00:01:00Z"
        "&end_date=2032-01-01T00:03:00Z",
        headers=admin.headers,
    )
    assert [e["id"] for e in window.json()] == made[3:0:-1]
    nothing = ids.new_id(ids.AGENT)
    assert (
        await client.get(f"{EXPORT}?format=json&resource_id={nothing}", headers=admin.headers)
    ).json() == []
    assert csv_rows(await client.get(f"{EXPORT}?resource_id={nothing}", headers=admin.headers)) == []

    bad = await client.get(f"{EXPORT}?format=xml&end_date=soon", headers=admin.headers)
    assert set(assert_error(bad, 400, "VALIDATION_ERROR")["fields"]) == {"format", "end_date"}


async def test_an_export_larger_than_a_batch_streams_every_entry_once_in_order(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person
) -> None:
    resource = ids.new_id(ids.AGENT)
    start = datetime(2033, 6, 1, tzinfo=UTC)
    # 2,500 entries, in runs of 7 sharing one moment: batches of 1,000 must cut through ties cleanly
    made = await seed(pool, resource, [start + timedelta(seconds=n // 7) for n in range(2500)])
    exported = await client.get(f"{EXPORT}?format=json&resource_id={resource}", headers=admin.headers)
    entries = exported.json()
    assert len(entries) == 2500
    assert {e["id"] for e in entries} == set(made)
    keys = [(e["timestamp"], e["id"]) for e in entries]
    assert keys == sorted(keys, reverse=True)
    rows = csv_rows(await client.get(f"{EXPORT}?resource_id={resource}", headers=admin.headers))
    assert [r["id"] for r in rows] == [e["id"] for e in entries]


async def test_no_secret_reaches_the_log_or_its_exports(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person
) -> None:
    provider_key = f"sk-live-{secrets.token_hex(16)}"
    provider = await client.post(
        "/api/v1/providers",
        headers=admin.headers,
        json={
            "name": f"secret-{secrets.token_hex(4)}",
            "type": "anthropic",
            "endpoint": "https://api.anthropic.example/v1",
            "credentials": {"api_key": provider_key},
        },
    )
    assert provider.status_code == 201, provider.text
    agent = await client.post(
        "/api/v1/agents",
        headers=admin.headers,
        json={"name": f"secret-{secrets.token_hex(3)}", "budget": 5, "providers": [provider.json()["id"]]},
    )
    assert agent.status_code == 201, agent.text
    agent_id, ic_token = agent.json()["id"], agent.json()["ic_token"]["token"]
    regenerated = await client.post(f"/api/v1/agents/{agent_id}/ic-token/regenerate", headers=admin.headers)
    assert regenerated.status_code == 200, regenerated.text
    new_token = regenerated.json()["ic_token"]["token"]
    access_token = admin.headers["Authorization"].removeprefix("Bearer ")

    as_csv = await client.get(EXPORT, headers=admin.headers)
    as_json = await client.get(f"{EXPORT}?format=json", headers=admin.headers)
    listed = await client.get(f"{LOGS}?per_page=100", headers=admin.headers)
    ours = {provider.json()["id"], agent_id, regenerated.json()["ic_token"]["id"]}
    operations = {r["operation"] for r in csv_rows(as_csv) if r["resource_id"] in ours}
    assert {"PROVIDER_CREATED", "AGENT_CREATED", "IC_TOKEN_REGENERATED"} <= operations  # not vacuous
    for text in (as_csv.text, as_json.text, listed.text):
        for secret in (provider_key, ic_token, new_token, access_token):
            assert secret not in text


async def test_csv_cells_that_look_like_formulas_are_neutralised(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin: Person
) -> None:
    dev = await make_person(client, pool, "user")
    agent = await create_agent(client, dev.headers, 10)
    hostile = '=HYPERLINK("https://evil.example","click")'
    created = await client.post(
        "/api/v1/budget-requests",
        headers={**dev.headers, "User-Agent": hostile},
        json={"agent_id": agent.id, "requested_budget": 20, "justification": WHY},
    )
    assert created.status_code == 201, created.text
    query = f"resource_id={created.json()['id']}"
    (row,) = csv_rows(await client.get(f"{EXPORT}?{query}", headers=admin.headers))
    assert row["user_agent"] == "'" + hostile
    listed = (await client.get(f"{LOGS}?{query}", headers=admin.headers)).json()
    assert listed["data"][0]["user_agent"] == hostile  # the JSON keeps the value as it came
