"""Bad input gives 400/404 in the error format, names every bad field at once, and changes nothing.

Each case posts a bad body to a real endpoint, checks the error envelope of DESIGN.md section 3,
and compares a fingerprint of every table taken before and after: a refused request must not
leave a trace in the ledger, the leases, the usage events or the admin tables.
"""

import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from iron import ids
from tests.conftest import ADMIN_EMAIL, AgentHandle, MakeAgent
from tests.control_plane.helpers import assert_error, fingerprint, usage
from tests.ledger_checks import assert_ledger_invariants

LEASE = "<<lease>>"  # placeholder for the test agent's open lease id, filled in per request
AGENT = "<<agent>>"  # placeholder for the test agent's id, in paths


# --- helpers -------------------------------------------------------------------------------------


async def snapshot(pool: asyncpg.Pool, agent_id: str) -> dict[str, Any]:
    """The agent's ledger row and lease rows, plus a row count and content hash of every table."""
    return {
        "agent": dict(await pool.fetchrow("SELECT * FROM agents WHERE id = $1", agent_id) or {}),
        "leases": [
            dict(row)
            for row in await pool.fetch("SELECT * FROM leases WHERE agent_id = $1 ORDER BY id", agent_id)
        ],
        "tables": await fingerprint(pool),
    }


def fill(value: Any, lease_id: str, agent_id: str) -> Any:
    """Replace the placeholders in a body template (dict, list, str or raw bytes)."""
    if isinstance(value, bytes):
        return value.replace(LEASE.encode(), lease_id.encode()).replace(AGENT.encode(), agent_id.encode())
    if isinstance(value, str):
        return value.replace(LEASE, lease_id).replace(AGENT, agent_id)
    if isinstance(value, dict):
        return {key: fill(item, lease_id, agent_id) for key, item in value.items()}
    if isinstance(value, list):
        return [fill(item, lease_id, agent_id) for item in value]
    return value


def encoded(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def report(**overrides: Any) -> dict[str, Any]:
    return usage(**{"lease_id": LEASE, **overrides})


def unknown_id(prefix: str) -> str:
    return ids.new_id(prefix)


@dataclass(frozen=True)
class Subject:
    """An agent with an open lease, shared by the protocol cases."""

    agent: AgentHandle
    lease_id: str


@pytest.fixture(scope="module")
async def subject(client: httpx.AsyncClient, make_agent: MakeAgent) -> Subject:
    agent = await make_agent(budget=100)
    response = await client.post(
        "/api/v1/budget/handshake", headers=agent.headers, json={"requested_budget": 10}
    )
    assert response.status_code == 200, response.text
    lease_id = response.json()["lease_id"]
    # one real report, so that a bad request could visibly disturb a non-trivial ledger
    ok = await client.post("/api/v1/budget/report", headers=agent.headers, json=fill(report(), lease_id, ""))
    assert ok.status_code == 204, ok.text
    return Subject(agent, lease_id)


async def post_bad(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    subject: Subject,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> httpx.Response:
    """Send the request and assert that no table changed."""
    before = await snapshot(pool, subject.agent.id)
    response = await client.request(
        method,
        fill(path, subject.lease_id, subject.agent.id),
        content=encoded(fill(body, subject.lease_id, subject.agent.id)),
        headers={**headers, "content-type": "application/json"},
    )
    after = await snapshot(pool, subject.agent.id)
    assert after == before, f"{method} {path} changed state: {response.status_code} {response.text}"
    return response


# --- budget protocol -----------------------------------------------------------------------------

NEAR_ID = "lease_" + str(uuid.uuid1())  # the right prefix, but a version-1 uuid

PROTOCOL_CASES: list[Any] = [
    # handshake
    pytest.param(
        "/api/v1/budget/handshake",
        {"requested_budget": "5", "provider": 5, "runtime_id": True},
        {"requested_budget", "provider", "runtime_id"},
        id="handshake-wrong-types-3",
    ),
    pytest.param(
        "/api/v1/budget/handshake", {"requested_budget": True}, {"requested_budget"}, id="handshake-bool"
    ),
    pytest.param(
        "/api/v1/budget/handshake", {"requested_budget": "5"}, {"requested_budget"}, id="handshake-str-5"
    ),
    pytest.param(
        "/api/v1/budget/handshake", {"requested_budget": -1}, {"requested_budget"}, id="handshake-negative"
    ),
    pytest.param(
        "/api/v1/budget/handshake", {"requested_budget": 0}, {"requested_budget"}, id="handshake-zero"
    ),
    pytest.param(
        "/api/v1/budget/handshake",
        {"requested_budget": 1000.01},
        {"requested_budget"},
        id="handshake-over-1000",
    ),
    pytest.param(
        "/api/v1/budget/handshake",
        {"runtime_id": "r" * 201, "runtime_version": "v" * 10_000, "provider": ""},
        {"runtime_id", "runtime_version", "provider"},
        id="handshake-oversize-and-empty-strings",
    ),
    pytest.param("/api/v1/budget/handshake", b"{bad", {"body"}, id="handshake-malformed"),
    pytest.param("/api/v1/budget/handshake", b"[]", {"body"}, id="handshake-array"),
    pytest.param("/api/v1/budget/handshake", b"null", {"body"}, id="handshake-null"),
    pytest.param("/api/v1/budget/handshake", b'{"requested_budget": NaN}', {"body"}, id="handshake-nan"),
    pytest.param("/api/v1/budget/handshake", b'{"requested_budget": Infinity}', {"body"}, id="handshake-inf"),
    pytest.param(
        "/api/v1/budget/handshake", b'{"requested_budget": -Infinity}', {"body"}, id="handshake-neg-inf"
    ),
    pytest.param(
        "/api/v1/budget/handshake", b'{"requested_budget": 1e999}', {"requested_budget"}, id="handshake-1e999"
    ),
    # report, one usage
    pytest.param(
        "/api/v1/budget/report",
        {"lease_id": LEASE},
        {"request_id", "input_tokens", "output_tokens", "cost_usd", "model", "provider", "timestamp"},
        id="report-missing-7",
    ),
    pytest.param(
        "/api/v1/budget/report",
        report(
            input_tokens="100", output_tokens=1.5, cost_usd="0.01", model=5, status="done", timestamp="later"
        ),
        {"input_tokens", "output_tokens", "cost_usd", "model", "status", "timestamp"},
        id="report-wrong-types-6",
    ),
    pytest.param(
        "/api/v1/budget/report",
        report(input_tokens=True, cost_usd=False),
        {"input_tokens", "cost_usd"},
        id="report-bools",
    ),
    pytest.param("/api/v1/budget/report", report(cost_usd=-0.01), {"cost_usd"}, id="report-negative-cost"),
    pytest.param(
        "/api/v1/budget/report", report(cost_usd=100_001), {"cost_usd"}, id="report-cost-over-limit"
    ),
    pytest.param(
        "/api/v1/budget/report",
        report(input_tokens=-1, output_tokens=100_000_001, tokens=-5, latency_ms=-1),
        {"input_tokens", "output_tokens", "tokens", "latency_ms"},
        id="report-bad-counts-4",
    ),
    pytest.param(
        "/api/v1/budget/report",
        report(request_id="r" * 201, model="m" * 10_000, provider=""),
        {"request_id", "model", "provider"},
        id="report-oversize-strings",
    ),
    pytest.param(
        "/api/v1/budget/report", report(lease_id="lease_123"), {"lease_id"}, id="report-malformed-lease"
    ),
    pytest.param("/api/v1/budget/report", report(lease_id=NEAR_ID), {"lease_id"}, id="report-uuid1-lease"),
    pytest.param(
        "/api/v1/budget/report",
        report(lease_id=5, cost_usd=-1, model=None),
        {"lease_id", "cost_usd", "model"},
        id="report-three-mistakes",
    ),
    pytest.param(
        "/api/v1/budget/report",
        json.dumps(report()).replace('"cost_usd": 0.01', '"cost_usd": 1e999').encode(),
        {"cost_usd"},
        id="report-cost-1e999",
    ),
    pytest.param(
        "/api/v1/budget/report",
        json.dumps(report()).replace('"cost_usd": 0.01', '"cost_usd": NaN').encode(),
        {"body"},
        id="report-cost-nan",
    ),
    pytest.param("/api/v1/budget/report", b"{bad", {"body"}, id="report-malformed"),
    pytest.param("/api/v1/budget/report", b"", {"body"}, id="report-empty-body"),
    pytest.param("/api/v1/budget/report", b"[{}]", {"body"}, id="report-array"),
    # report, a batch
    pytest.param(
        "/api/v1/budget/report",
        {"lease_id": "nope", "reports": [usage(), usage(cost_usd=-1), usage(model=5)]},
        {"lease_id", "reports[1].cost_usd", "reports[2].model"},
        id="batch-three-mistakes-nested",
    ),
    pytest.param(
        "/api/v1/budget/report",
        {"lease_id": LEASE, "reports": [usage(), {"request_id": "x", "input_tokens": 1}]},
        {
            "reports[1].output_tokens",
            "reports[1].cost_usd",
            "reports[1].model",
            "reports[1].provider",
            "reports[1].timestamp",
        },
        id="batch-item-missing-fields",
    ),
    pytest.param(
        "/api/v1/budget/report", {"lease_id": LEASE, "reports": []}, {"reports"}, id="batch-0-reports"
    ),
    pytest.param(
        "/api/v1/budget/report",
        {"lease_id": LEASE, "reports": [usage(request_id=f"many-{i}") for i in range(1001)]},
        {"reports"},
        id="batch-1001-reports",
    ),
    pytest.param(
        "/api/v1/budget/report", {"lease_id": LEASE, "reports": "x"}, {"reports"}, id="batch-not-a-list"
    ),
    pytest.param("/api/v1/budget/report", {"reports": [usage()]}, {"lease_id"}, id="batch-missing-lease"),
    pytest.param(
        "/api/v1/budget/report",
        {"lease_id": LEASE, "reports": [usage(), usage(request_id="r" * 201)]},
        {"reports[1].request_id"},
        id="batch-oversize-request-id",
    ),
    # refresh
    pytest.param("/api/v1/budget/refresh", {}, {"lease_id", "requested_budget"}, id="refresh-missing-2"),
    pytest.param(
        "/api/v1/budget/refresh",
        {"lease_id": 5, "requested_budget": "5"},
        {"lease_id", "requested_budget"},
        id="refresh-wrong-types",
    ),
    pytest.param(
        "/api/v1/budget/refresh",
        {"lease_id": LEASE, "requested_budget": -1},
        {"requested_budget"},
        id="refresh-neg",
    ),
    pytest.param(
        "/api/v1/budget/refresh",
        {"lease_id": LEASE, "requested_budget": 1001},
        {"requested_budget"},
        id="refresh-over-1000",
    ),
    pytest.param(
        "/api/v1/budget/refresh",
        {"lease_id": LEASE, "requested_budget": True},
        {"requested_budget"},
        id="refresh-bool",
    ),
    pytest.param(
        "/api/v1/budget/refresh",
        {"lease_id": "lease_not-a-uuid", "requested_budget": 1},
        {"lease_id"},
        id="refresh-malformed-lease",
    ),
    pytest.param(
        "/api/v1/budget/refresh",
        b'{"lease_id": "<<lease>>", "requested_budget": Infinity}',
        {"body"},
        id="refresh-infinity",
    ),
    pytest.param("/api/v1/budget/refresh", b"", {"body"}, id="refresh-empty-body"),
    # return
    pytest.param("/api/v1/budget/return", {}, {"lease_id"}, id="return-missing"),
    pytest.param("/api/v1/budget/return", {"lease_id": 5}, {"lease_id"}, id="return-wrong-type"),
    pytest.param("/api/v1/budget/return", {"lease_id": "lease_"}, {"lease_id"}, id="return-malformed-lease"),
    pytest.param(
        "/api/v1/budget/return",
        {"lease_id": "x", "final_spent_usd": "1", "returning_usd": True},
        {"lease_id", "final_spent_usd", "returning_usd"},
        id="return-three-mistakes",
    ),
    pytest.param("/api/v1/budget/return", b"{bad", {"body"}, id="return-malformed"),
    pytest.param("/api/v1/budget/return", b'"lease"', {"body"}, id="return-string"),
]


@pytest.mark.parametrize(("path", "body", "fields"), PROTOCOL_CASES)
async def test_bad_protocol_body_is_400_naming_every_field_and_changes_nothing(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    subject: Subject,
    path: str,
    body: Any,
    fields: set[str],
) -> None:
    response = await post_bad(client, pool, subject, "POST", path, body, subject.agent.headers)
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert set(error["fields"]) == fields, error
    assert all(isinstance(message, str) and message for message in error["fields"].values()), error


HUGE = b"1" + b"0" * 400  # an integer literal no float can hold


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        pytest.param(b'{"requested_budget": NaN}', {"body": "Malformed JSON"}, id="nan"),
        pytest.param(b'{"requested_budget": Infinity}', {"body": "Malformed JSON"}, id="infinity"),
        pytest.param(b'{"requested_budget": -Infinity}', {"body": "Malformed JSON"}, id="minus-infinity"),
        pytest.param(b"{bad", {"body": "Malformed JSON"}, id="broken"),
        pytest.param(b'{"requested_budget": 1e999}', {"requested_budget": None}, id="1e999"),
        pytest.param(b'{"requested_budget": -1e999}', {"requested_budget": None}, id="minus-1e999"),
        pytest.param(
            b'{"requested_budget": ' + HUGE + b"}", {"requested_budget": "Number out of range"}, id="huge"
        ),
    ],
)
async def test_non_finite_money_is_refused_with_a_clear_message(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    subject: Subject,
    body: bytes,
    fields: dict[str, str | None],
) -> None:
    """JSON has no NaN or Infinity (malformed); a number too large for a float names its field."""
    response = await post_bad(
        client, pool, subject, "POST", "/api/v1/budget/handshake", body, subject.agent.headers
    )
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert set(error["fields"]) == set(fields), error
    for field, message in fields.items():
        assert message is None or error["fields"][field] == message, error


@pytest.mark.parametrize(
    ("path", "body", "fields"),
    [
        pytest.param(
            "/api/v1/budget/report",
            json.dumps(report(model=5, lease_id="nope")).replace('"cost_usd": 0.01', '"cost_usd": 1e999'),
            {"cost_usd", "model", "lease_id"},
            id="single",
        ),
        pytest.param(
            "/api/v1/budget/report",
            json.dumps({"lease_id": LEASE, "reports": [usage(), usage(cost_usd=12345.5, model="")]})
            .replace("12345.5", "1e999")
            .replace('"input_tokens": 100', '"input_tokens": 1e999', 1),
            {"reports[0].input_tokens", "reports[1].cost_usd", "reports[1].model"},
            id="batch",
        ),
    ],
)
async def test_an_out_of_range_number_does_not_hide_the_other_field_errors(
    client: httpx.AsyncClient, pool: asyncpg.Pool, subject: Subject, path: str, body: str, fields: set[str]
) -> None:
    response = await post_bad(client, pool, subject, "POST", path, body.encode(), subject.agent.headers)
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert set(error["fields"]) == fields, error


async def test_an_out_of_range_number_in_an_unconstrained_field_is_named(
    client: httpx.AsyncClient, pool: asyncpg.Pool, subject: Subject
) -> None:
    body = b'{"lease_id": "nope", "final_spent_usd": 1e999, "returning_usd": 1}'
    response = await post_bad(
        client, pool, subject, "POST", "/api/v1/budget/return", body, subject.agent.headers
    )
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert set(error["fields"]) == {"lease_id", "final_spent_usd"}, error


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/api/v1/budget/report", "single", id="report"),
        pytest.param("/api/v1/budget/report", "batch", id="report-batch"),
        pytest.param("/api/v1/budget/refresh", {"requested_budget": 1}, id="refresh"),
        pytest.param("/api/v1/budget/return", {"final_spent_usd": 0}, id="return"),
    ],
)
async def test_unknown_lease_is_404_and_changes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, subject: Subject, path: str, body: Any
) -> None:
    lease_id = unknown_id(ids.LEASE)
    if body == "single":
        payload: Any = {**usage(), "lease_id": lease_id}
    elif body == "batch":
        payload = {"lease_id": lease_id, "reports": [usage(), usage()]}
    else:
        payload = {**body, "lease_id": lease_id}
    response = await post_bad(client, pool, subject, "POST", path, payload, subject.agent.headers)
    error = assert_error(response, 404, "RESOURCE_NOT_FOUND")
    assert "fields" not in error, error


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/api/v1/budget/report", "single", id="report"),
        pytest.param("/api/v1/budget/report", "batch", id="report-batch"),
        pytest.param("/api/v1/budget/refresh", {"requested_budget": 5}, id="refresh"),
        pytest.param("/api/v1/budget/refresh", {"requested_budget": 0}, id="heartbeat"),
        pytest.param("/api/v1/budget/return", {}, id="return"),
    ],
)
async def test_another_agents_lease_is_404_and_charges_neither_agent(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    make_agent: MakeAgent,
    subject: Subject,
    path: str,
    body: Any,
) -> None:
    intruder = await make_agent(budget=50)
    victim_lease = subject.lease_id
    if body == "single":
        payload: Any = {**usage(cost_usd=7), "lease_id": victim_lease}
    elif body == "batch":
        payload = {"lease_id": victim_lease, "reports": [usage(cost_usd=3), usage(cost_usd=4)]}
    else:
        payload = {**body, "lease_id": victim_lease}
    intruder_before = await snapshot(pool, intruder.id)
    # post_bad compares the victim's (subject's) ledger and every table before and after
    response = await post_bad(client, pool, subject, "POST", path, payload, intruder.headers)
    error = assert_error(response, 404, "RESOURCE_NOT_FOUND")
    assert await snapshot(pool, intruder.id) == intruder_before
    for agent_id in (intruder.id, subject.agent.id):
        await assert_ledger_invariants(pool, agent_id)
    # the victim's lease is still open and usable by its own agent
    assert await pool.fetchval("SELECT status FROM leases WHERE id = $1", victim_lease) == "open"
    assert "lease_id" in (error.get("details") or {}) or "Lease" in error["message"]


async def test_the_victim_can_still_use_its_lease_after_the_attempts(
    client: httpx.AsyncClient, pool: asyncpg.Pool, subject: Subject
) -> None:
    """The refused requests above left the shared lease intact: a heartbeat on it still works.

    It also shows that the fingerprint sees a real change: the heartbeat moves the lease's expiry.
    """
    before = await snapshot(pool, subject.agent.id)
    response = await client.post(
        "/api/v1/budget/refresh",
        headers=subject.agent.headers,
        json={"lease_id": subject.lease_id, "requested_budget": 0},
    )
    assert response.status_code == 200, response.text
    after = await snapshot(pool, subject.agent.id)
    assert after["leases"] != before["leases"]
    assert after["leases"][0]["expires_at"] >= before["leases"][0]["expires_at"]
    state = await assert_ledger_invariants(pool, subject.agent.id)
    assert (state.spent, state.outstanding) == (10_000, 10_000_000 - 10_000)


# --- admin endpoints ------------------------------------------------------------------------------

UNKNOWN_PROVIDER = unknown_id(ids.PROVIDER)
UNKNOWN_PROJECT = unknown_id(ids.PROJECT)
GOOD_PROVIDER: dict[str, Any] = {
    "name": "bad-input-provider",
    "type": "openai",
    "endpoint": "https://api.example.com/v1",
    "credentials": {"api_key": "sk-bad-input-0000"},
    "models": ["gpt-4o-mini"],
}

ADMIN_CASES: list[Any] = [
    # login
    pytest.param("POST", "/api/v1/auth/login", {}, {"email", "password"}, id="login-missing-2"),
    pytest.param(
        "POST",
        "/api/v1/auth/login",
        {"email": 5, "password": True},
        {"email", "password"},
        id="login-wrong-types",
    ),
    pytest.param(
        "POST",
        "/api/v1/auth/login",
        {"email": "not-an-email", "password": ""},
        {"email", "password"},
        id="login-bad-values",
    ),
    pytest.param(
        "POST",
        "/api/v1/auth/login",
        {"email": "a" * 250 + "@x.io", "password": "p" * 1025},
        {"email", "password"},
        id="login-oversize",
    ),
    pytest.param(
        "POST",
        "/api/v1/auth/login",
        {"email": ADMIN_EMAIL, "password": 12345678},
        {"password"},
        id="login-num-pwd",
    ),
    pytest.param("POST", "/api/v1/auth/login", b"{bad", {"body"}, id="login-malformed"),
    pytest.param("POST", "/api/v1/auth/login", b"", {"body"}, id="login-empty"),
    pytest.param("POST", "/api/v1/auth/login", b'["a", "b"]', {"body"}, id="login-array"),
    # create provider
    pytest.param(
        "POST", "/api/v1/providers", {}, {"name", "type", "endpoint", "credentials"}, id="provider-missing-4"
    ),
    pytest.param(
        "POST",
        "/api/v1/providers",
        {
            "name": "p" * 101,
            "type": "bogus",
            "endpoint": "ftp://example.com",
            "credentials": {"api_key": ""},
            "models": "gpt",
        },
        {"name", "type", "endpoint", "credentials.api_key", "models"},
        id="provider-five-mistakes-nested",
    ),
    pytest.param(
        "POST",
        "/api/v1/providers",
        {**GOOD_PROVIDER, "credentials": "sk-inline", "models": ["ok", 5, ""]},
        {"credentials", "models[1]", "models[2]"},
        id="provider-wrong-shapes",
    ),
    pytest.param(
        "POST",
        "/api/v1/providers",
        {**GOOD_PROVIDER, "credentials": {}},
        {"credentials.api_key"},
        id="provider-no-key",
    ),
    pytest.param("POST", "/api/v1/providers", b"{bad", {"body"}, id="provider-malformed"),
    pytest.param("POST", "/api/v1/providers", b"[]", {"body"}, id="provider-array"),
    # create agent
    pytest.param("POST", "/api/v1/agents", {}, {"name", "budget"}, id="agent-missing-2"),
    pytest.param(
        "POST",
        "/api/v1/agents",
        {"name": "", "budget": "5", "providers": "ip_x"},
        {"name", "budget", "providers"},
        id="agent-wrong-types-3",
    ),
    pytest.param(
        "POST",
        "/api/v1/agents",
        {"name": "a", "budget": -1, "providers": ["nope"], "tags": [""], "project_id": "proj_1"},
        {"budget", "providers[0]", "tags[0]", "project_id"},
        id="agent-four-mistakes-nested",
    ),
    pytest.param("POST", "/api/v1/agents", {"name": "a", "budget": True}, {"budget"}, id="agent-bool-budget"),
    pytest.param(
        "POST",
        "/api/v1/agents",
        {"name": "n" * 101, "budget": 1, "description": "d" * 1001},
        {"name", "description"},
        id="agent-oversize",
    ),
    pytest.param(
        "POST",
        "/api/v1/agents",
        {"name": "a", "budget": 1_000_000_001},
        {"budget"},
        id="agent-budget-over-limit",
    ),
    pytest.param(
        "POST",
        "/api/v1/agents",
        {"name": "a", "budget": 1, "providers": [UNKNOWN_PROVIDER], "project_id": UNKNOWN_PROJECT},
        {"providers[0]", "project_id"},
        id="agent-unknown-references",
    ),
    pytest.param(
        "POST", "/api/v1/agents", b'{"name": "a", "budget": 1e999}', {"budget"}, id="agent-budget-1e999"
    ),
    pytest.param("POST", "/api/v1/agents", b'{"name": "a", "budget": NaN}', {"body"}, id="agent-budget-nan"),
    pytest.param("POST", "/api/v1/agents", b"{bad", {"body"}, id="agent-malformed"),
    # set budget
    pytest.param("PUT", f"/api/v1/limits/agents/{AGENT}/budget", {}, {"budget"}, id="budget-missing"),
    pytest.param(
        "PUT",
        f"/api/v1/limits/agents/{AGENT}/budget",
        {"budget": "5", "force": "yes", "reason": 5},
        {"budget", "force", "reason"},
        id="budget-wrong-types-3",
    ),
    pytest.param(
        "PUT", f"/api/v1/limits/agents/{AGENT}/budget", {"budget": -1}, {"budget"}, id="budget-negative"
    ),
    pytest.param(
        "PUT",
        f"/api/v1/limits/agents/{AGENT}/budget",
        {"budget": 2e9, "reason": "r" * 501},
        {"budget", "reason"},
        id="budget-over-limit-and-long-reason",
    ),
    pytest.param(
        "PUT",
        f"/api/v1/limits/agents/{AGENT}/budget",
        {"budget": 50},
        {"force"},
        id="budget-lower-without-force",
    ),
    pytest.param(
        "PUT",
        f"/api/v1/limits/agents/{AGENT}/budget",
        b'{"budget": Infinity}',
        {"body"},
        id="budget-infinity",
    ),
    pytest.param("PUT", f"/api/v1/limits/agents/{AGENT}/budget", b"", {"body"}, id="budget-empty"),
    # malformed ids in paths
    pytest.param("GET", "/api/v1/agents/not-an-id", b"", {"agent_id"}, id="get-agent-malformed-id"),
    pytest.param(
        "GET", "/api/v1/agents/agent_" + str(uuid.uuid1()), b"", {"agent_id"}, id="get-agent-uuid1-id"
    ),
    pytest.param(
        "PUT",
        "/api/v1/limits/agents/not-an-id/budget",
        {"budget": 1},
        {"agent_id"},
        id="set-budget-malformed-id",
    ),
    pytest.param(
        "GET", "/api/v1/limits/agents/ip_x/budget/history", b"", {"agent_id"}, id="history-malformed-id"
    ),
    pytest.param(
        "POST",
        "/api/v1/agents/not-an-id/ic-token/regenerate",
        b"",
        {"agent_id"},
        id="regenerate-malformed-id",
    ),
    pytest.param("DELETE", "/api/v1/agents/not-an-id/ic-token", b"", {"agent_id"}, id="revoke-malformed-id"),
]


@pytest.mark.parametrize(("method", "path", "body", "fields"), ADMIN_CASES)
async def test_bad_admin_request_is_400_naming_every_field_and_changes_nothing(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    admin_headers: dict[str, str],
    provider_id: str,
    subject: Subject,
    method: str,
    path: str,
    body: Any,
    fields: set[str],
) -> None:
    response = await post_bad(client, pool, subject, method, path, body, admin_headers)
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert set(error["fields"]) == fields, error
    assert "sk-bad-input" not in response.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("GET", "/api/v1/agents/{unknown}", b"", id="get-agent"),
        pytest.param("PUT", "/api/v1/limits/agents/{unknown}/budget", {"budget": 1}, id="set-budget"),
        pytest.param("GET", "/api/v1/limits/agents/{unknown}/budget/history", b"", id="history"),
        pytest.param("POST", "/api/v1/agents/{unknown}/ic-token/regenerate", b"", id="regenerate"),
        pytest.param("DELETE", "/api/v1/agents/{unknown}/ic-token", b"", id="revoke"),
    ],
)
async def test_unknown_well_formed_agent_id_is_404_and_changes_nothing(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    admin_headers: dict[str, str],
    subject: Subject,
    method: str,
    path: str,
    body: Any,
) -> None:
    path = path.format(unknown=unknown_id(ids.AGENT))
    response = await post_bad(client, pool, subject, method, path, body, admin_headers)
    assert_error(response, 404, "RESOURCE_NOT_FOUND")


async def test_a_valid_request_after_all_that_still_works(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], subject: Subject
) -> None:
    """Control: the same endpoints accept a good body, so the 400s above are about the input."""
    before = await snapshot(pool, subject.agent.id)
    response = await client.put(
        f"/api/v1/limits/agents/{subject.agent.id}/budget", headers=admin_headers, json={"budget": 150}
    )
    assert response.status_code == 200, response.text
    assert response.json()["previous_budget"] == 100.0
    created = await client.post("/api/v1/providers", headers=admin_headers, json=GOOD_PROVIDER)
    assert created.status_code == 201, created.text
    state = await assert_ledger_invariants(pool, subject.agent.id)
    assert state.budget == 150_000_000
    after = await snapshot(pool, subject.agent.id)
    assert after["tables"]["budget_changes"][0] == before["tables"]["budget_changes"][0] + 1
    assert after["tables"]["providers"][0] == before["tables"]["providers"][0] + 1
    assert after["agent"]["budget_micros"] != before["agent"]["budget_micros"]


# --- routing -------------------------------------------------------------------------------------

UNKNOWN_ROUTES = [
    pytest.param("GET", "/api/v1/no-such-thing", id="get-unknown"),
    pytest.param("POST", "/api/v1/budget/nope", id="post-unknown-under-budget"),
    pytest.param("GET", "/no-such-page", id="unknown-page"),  # "/" is the dashboard
    pytest.param("GET", "/dashboard/no-such-file.js", id="unknown-static-file"),
    pytest.param("GET", "/api/v1/agents/agent_x/nope", id="under-agent"),
]
WRONG_METHODS = [
    pytest.param("GET", "/api/v1/budget/handshake", id="get-handshake"),
    pytest.param("PUT", "/api/v1/budget/report", id="put-report"),
    pytest.param("DELETE", "/api/v1/providers", id="delete-providers"),
    pytest.param("POST", "/api/health", id="post-health"),
    pytest.param("GET", "/api/v1/auth/login", id="get-login"),
]


@pytest.mark.parametrize(("method", "path"), UNKNOWN_ROUTES)
async def test_unknown_route_is_404_in_the_error_format(
    client: httpx.AsyncClient, admin_headers: dict[str, str], method: str, path: str
) -> None:
    response = await client.request(method, path, headers=admin_headers)
    error = assert_error(response, 404, "RESOURCE_NOT_FOUND")
    assert "fields" not in error


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
async def test_wrong_method_is_405_in_the_error_format(
    client: httpx.AsyncClient, admin_headers: dict[str, str], method: str, path: str
) -> None:
    response = await client.request(method, path, headers=admin_headers)
    assert_error(response, 405, "METHOD_NOT_ALLOWED")


async def test_a_client_request_id_is_kept_in_the_error_and_the_header(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/login", content=b"{bad", headers={"X-Request-ID": "trace-0123456789"}
    )
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert error["request_id"] == "trace-0123456789"
