"""``/ws`` against real control-plane processes, PostgreSQL and Redis.

The handshake and its refusals, per-client authorization (two users and an
admin), fan-out across replicas, heartbeats, and sockets ended when their
credential stops holding.
"""

import secrets
from typing import Any

import httpx
import pytest

from control_plane.auth import jwt_tokens
from control_plane.settings import Settings
from iron.realtime import (
    CLOSE_AUTH_TIMEOUT,
    CLOSE_BAD_MESSAGE,
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHORIZED,
    AgentEvent,
    AgentUpdated,
    BudgetRequestEvent,
    Error,
    Heartbeat,
    LeaseEvent,
    StateUpdate,
)
from tests.conftest import MakeAgent, open_lease
from tests.realtime.conftest import make_person, open_feed, own_agent, refusal, usage


@pytest.mark.parametrize(
    ("first", "code", "close"),
    [
        pytest.param("not json", "VALIDATION_ERROR", CLOSE_BAD_MESSAGE, id="not-json"),
        pytest.param('{"type": "auth"}', "VALIDATION_ERROR", CLOSE_BAD_MESSAGE, id="no-token"),
        pytest.param(
            '{"type": "hello", "token": 5, "x": 1}', "VALIDATION_ERROR", CLOSE_BAD_MESSAGE, id="bad"
        ),
        pytest.param(
            '{"type": "auth", "token": "garbage"}', "AUTH_INVALID_TOKEN", CLOSE_UNAUTHORIZED, id="bad-token"
        ),
    ],
)
async def test_a_bad_first_message_is_refused_with_the_reason(
    replicas: list[str], first: str, code: str, close: int
) -> None:
    error, close_code = await refusal(replicas[0], first)
    assert (error.error.code, close_code) == (code, close)


async def test_every_field_error_of_the_auth_message_at_once(replicas: list[str]) -> None:
    error, _ = await refusal(replicas[0], '{"type": "hello", "token": 5}')
    assert error.error.fields is not None
    assert set(error.error.fields) == {"type", "token"}, error.error.fields


async def test_no_auth_message_times_out(replicas: list[str]) -> None:
    error, close_code = await refusal(replicas[0], None)
    assert (error.error.code, close_code) == ("AUTH_TIMEOUT", CLOSE_AUTH_TIMEOUT)


async def test_an_ic_token_and_an_expired_token_are_refused(
    replicas: list[str], make_agent: MakeAgent, env: dict[str, str], admin_headers: dict[str, str]
) -> None:
    agent = await make_agent(budget=5)
    error, close_code = await refusal(replicas[0], f'{{"type": "auth", "token": "{agent.ic_token}"}}')
    assert (error.error.code, close_code) == ("PERMISSION_DENIED", CLOSE_FORBIDDEN)

    async with httpx.AsyncClient(base_url=replicas[0]) as http:
        me = (await http.post("/api/v1/auth/validate", headers=admin_headers)).json()
    expired = jwt_tokens.issue(
        me["user"]["id"], Settings.from_env(env).jwt_secret, -30, session_id="s", generation=0
    )
    error, close_code = await refusal(replicas[0], f'{{"type": "auth", "token": "{expired.token}"}}')
    assert (error.error.code, close_code) == ("AUTH_TOKEN_EXPIRED", CLOSE_UNAUTHORIZED)


async def test_an_api_token_opens_the_feed(
    replicas: list[str], client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    person = await make_person(client, admin_headers)
    response = await client.post("/api/v1/api-tokens", headers=person.headers, json={"name": "feed"})
    assert response.status_code == 201, response.text
    async with open_feed(replicas[1], response.json()["token"]) as reader:
        await reader.wait_for(lambda ms: bool(ms))
        assert isinstance(reader.messages[0], StateUpdate)


async def test_each_client_sees_only_the_agents_it_may_read_across_replicas(
    replicas: list[str], client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    alice, bob = await make_person(client, admin_headers), await make_person(client, admin_headers)
    admin_token = admin_headers["Authorization"].removeprefix("Bearer ")
    a_agent, b_agent = await own_agent(client, alice, 10), await own_agent(client, bob, 10)
    replica_a, replica_b = replicas
    async with (
        open_feed(replica_a, alice.token) as alice_feed,
        open_feed(replica_a, bob.token) as bob_feed,
        open_feed(replica_b, admin_token) as admin_feed,
    ):
        for reader in (alice_feed, bob_feed, admin_feed):
            await reader.wait_for(lambda ms: any(isinstance(m, StateUpdate) for m in ms))
        # everything happens on replica B, while Alice and Bob read replica A
        async with httpx.AsyncClient(base_url=replica_b) as http:
            for agent, owner in ((a_agent, alice), (b_agent, bob)):
                lease = await open_lease(http, agent, 2)
                report = usage(f"req-{secrets.token_hex(4)}", lease["lease_id"], 0.25)
                assert (
                    await http.post("/api/v1/budget/report", headers=agent.headers, json=report)
                ).status_code == 204
                # the duplicate is charged zero times and announced zero times
                assert (
                    await http.post("/api/v1/budget/report", headers=agent.headers, json=report)
                ).status_code == 204
                filed = await http.post(
                    "/api/v1/budget-requests",
                    headers=owner.headers,
                    json={"agent_id": agent.id, "requested_budget": 20, "justification": "x" * 30},
                )
                assert filed.status_code == 201, filed.text
                approved = await http.put(
                    f"/api/v1/budget-requests/{filed.json()['id']}/approve", headers=admin_headers, json={}
                )
                assert approved.status_code == 200, approved.text
                returned = await http.post(
                    "/api/v1/budget/return", headers=agent.headers, json={"lease_id": lease["lease_id"]}
                )
                assert returned.status_code == 200, returned.text

        def finished(agent_id: str) -> Any:
            return lambda ms: any(
                isinstance(m, LeaseEvent) and m.action == "returned" and m.agent_id == agent_id for m in ms
            )

        await alice_feed.wait_for(finished(a_agent.id))
        await bob_feed.wait_for(finished(b_agent.id))
        await admin_feed.wait_for(lambda ms: finished(a_agent.id)(ms) and finished(b_agent.id)(ms))

    for reader, mine, theirs in ((alice_feed, a_agent, b_agent), (bob_feed, b_agent, a_agent)):
        assert all(theirs.id not in text for text in reader.raw), "another user's agent leaked"
        snapshot = reader.messages[0]
        assert isinstance(snapshot, StateUpdate)
        assert [agent.id for agent in snapshot.agents] == [mine.id]
        kinds = [
            (type(m).__name__, getattr(m, "action", None))
            for m in reader.messages[1:]
            if not isinstance(m, Heartbeat | AgentUpdated)  # the agent's creation may arrive late
        ]
        assert kinds == [
            ("LeaseEvent", "granted"),
            ("AgentEvent", None),
            ("BudgetRequestEvent", "created"),
            ("BudgetRequestEvent", "approved"),
            ("LeaseEvent", "returned"),
        ], kinds
        call = reader.of_type(AgentEvent)[0]
        assert (call.agent_id, call.model, call.input_tokens, call.output_tokens) == (
            mine.id,
            "gpt-4o-mini",
            100,
            20,
        )
        assert (call.cost_usd, call.agent.spent) == (0.25, 0.25)
        approval = reader.of_type(BudgetRequestEvent)[1]
        assert (approval.status, approval.approved_budget, approval.agent.budget) == ("approved", 20.0, 20.0)
        returned = reader.of_type(LeaseEvent)[1]
        assert returned.amount == 1.75  # the unspent part of the $2 lease
    admin_events = {m.agent_id for m in admin_feed.of_type(AgentEvent)}
    assert {a_agent.id, b_agent.id} <= admin_events


async def test_heartbeats_arrive_on_an_idle_socket(
    replicas: list[str], admin_headers: dict[str, str]
) -> None:
    async with open_feed(replicas[0], admin_headers["Authorization"].removeprefix("Bearer ")) as reader:
        await reader.wait_for(lambda ms: sum(isinstance(m, Heartbeat) for m in ms) >= 3)
    beats = reader.of_type(Heartbeat)
    assert [b.timestamp for b in beats] == sorted(b.timestamp for b in beats)
    assert len({b.timestamp for b in beats}) == len(beats)


async def test_logout_and_suspension_close_the_socket(
    replicas: list[str], client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    leaving, suspended = await make_person(client, admin_headers), await make_person(client, admin_headers)
    async with (
        open_feed(replicas[0], leaving.token) as leaving_feed,
        open_feed(replicas[1], suspended.token) as suspended_feed,
    ):
        for reader in (leaving_feed, suspended_feed):
            await reader.wait_for(lambda ms: any(isinstance(m, StateUpdate) for m in ms))
        assert (await client.post("/api/v1/auth/logout", headers=leaving.headers)).status_code in (200, 204)
        response = await client.put(f"/api/v1/users/{suspended.id}/suspend", headers=admin_headers)
        assert response.status_code == 200, response.text
        assert await leaving_feed.wait_closed() == CLOSE_UNAUTHORIZED
        assert await suspended_feed.wait_closed() == CLOSE_UNAUTHORIZED
    for reader in (leaving_feed, suspended_feed):
        last = reader.messages[-1]
        assert isinstance(last, Error), reader.raw[-1]
        assert last.error.code == "AUTH_INVALID_TOKEN", reader.raw[-1]


async def test_rejected_and_cancelled_requests_reach_the_owner(
    replicas: list[str], client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    owner = await make_person(client, admin_headers)
    agent = await own_agent(client, owner, 10)
    async with open_feed(replicas[0], owner.token) as reader, httpx.AsyncClient(base_url=replicas[1]) as http:
        await reader.wait_for(lambda ms: any(isinstance(m, StateUpdate) for m in ms))
        filed = []
        for _ in range(2):
            response = await http.post(
                "/api/v1/budget-requests",
                headers=owner.headers,
                json={"agent_id": agent.id, "requested_budget": 15, "justification": "y" * 25},
            )
            assert response.status_code == 201, response.text
            filed.append(response.json()["id"])
        rejected = await http.put(
            f"/api/v1/budget-requests/{filed[0]}/reject",
            headers=admin_headers,
            json={"review_notes": "not now"},
        )
        assert rejected.status_code == 200, rejected.text
        cancelled = await http.delete(f"/api/v1/budget-requests/{filed[1]}", headers=owner.headers)
        assert cancelled.status_code == 200, cancelled.text
        await reader.wait_for(lambda ms: len([m for m in ms if isinstance(m, BudgetRequestEvent)]) == 4)
    events = [(m.action, m.request_id, m.status) for m in reader.of_type(BudgetRequestEvent)]
    assert events == [
        ("created", filed[0], "pending"),
        ("created", filed[1], "pending"),
        ("rejected", filed[0], "rejected"),
        ("cancelled", filed[1], "cancelled"),
    ]
    assert all(m.agent.budget == 10.0 for m in reader.of_type(BudgetRequestEvent))
