"""AGENT_UPDATED: an agent's creation, edits, budget change, change of owner and deletion reach
the admins and its owners (old and new), once each, and nobody else."""

from collections.abc import Callable

import httpx

from iron.realtime import AgentUpdated, ServerMessage, StateUpdate
from tests.realtime.conftest import Feed, make_person, open_feed


def _updates(reader: Feed, agent_id: str) -> list[AgentUpdated]:
    return [m for m in reader.of_type(AgentUpdated) if m.agent_id == agent_id]


def _has(agent_id: str, count: int) -> Callable[[list[ServerMessage]], bool]:
    return lambda ms: sum(isinstance(m, AgentUpdated) and m.agent_id == agent_id for m in ms) >= count


async def test_admin_changes_reach_the_admins_and_both_owners_once(
    replicas: list[str], client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    alice, bob, carol = [await make_person(client, admin_headers) for _ in range(3)]
    admin_token = admin_headers["Authorization"].removeprefix("Bearer ")
    replica_a, replica_b = replicas
    async with (
        open_feed(replica_a, alice.token) as alice_feed,
        open_feed(replica_a, bob.token) as bob_feed,
        open_feed(replica_b, carol.token) as carol_feed,
        open_feed(replica_b, admin_token) as admin_feed,
        httpx.AsyncClient(base_url=replica_b) as http,
    ):
        for reader in (alice_feed, bob_feed, carol_feed, admin_feed):
            await reader.wait_for(lambda ms: any(isinstance(m, StateUpdate) for m in ms))
        created = await http.post(
            "/api/v1/agents", headers=alice.headers, json={"name": "before", "budget": 10}
        )
        assert created.status_code == 201, created.text
        agent_id = created.json()["id"]
        one = f"/api/v1/agents/{agent_id}"
        renamed = await http.put(one, headers=alice.headers, json={"name": "after"})
        assert renamed.status_code == 200, renamed.text
        budget = await http.put(
            f"/api/v1/limits/agents/{agent_id}/budget",
            headers=admin_headers,
            json={"budget": 25, "reason": "more work"},
        )
        assert budget.status_code == 200, budget.text
        moved = await http.put(one, headers=admin_headers, json={"owner_id": bob.id})
        assert moved.status_code == 200, moved.text
        deleted = await http.delete(one, headers=bob.headers)
        assert deleted.status_code == 200, deleted.text

        await admin_feed.wait_for(_has(agent_id, 5))
        await bob_feed.wait_for(_has(agent_id, 2))
        await alice_feed.wait_for(_has(agent_id, 4))

    actions = [
        (m.action, m.agent.name, m.agent.budget, m.agent.owner_id) for m in _updates(admin_feed, agent_id)
    ]
    assert actions == [
        ("created", "before", 10.0, alice.id),
        ("updated", "after", 10.0, alice.id),
        ("budget_changed", "after", 25.0, alice.id),
        ("updated", "after", 25.0, bob.id),
        ("deleted", "after", 25.0, bob.id),
    ]
    assert _updates(admin_feed, agent_id)[-1].agent.status == "deleted"
    # the owners: each what happened while the agent was theirs, and the change of hands
    assert [(m.action, m.agent.owner_id) for m in _updates(alice_feed, agent_id)] == [
        ("created", alice.id),
        ("updated", alice.id),
        ("budget_changed", alice.id),
        ("updated", bob.id),
    ]
    assert [(m.action, m.agent.owner_id) for m in _updates(bob_feed, agent_id)] == [
        ("updated", bob.id),
        ("deleted", bob.id),
    ]
    assert all(agent_id not in text for text in carol_feed.raw), "another user's agent leaked"
