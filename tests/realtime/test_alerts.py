"""COST_ALERT: once per threshold crossing, under concurrent reports to two control-plane processes."""

import asyncio
import secrets
from datetime import timedelta

import asyncpg
import httpx
import pytest
from litestar import Litestar

from control_plane.budget.service import expire_leases
from control_plane.realtime.alerts import crossed
from iron.realtime import AgentEvent, CostAlert, LeaseEvent
from iron.timefmt import utcnow
from tests.conftest import MakeAgent, open_lease
from tests.realtime.conftest import open_feed, usage


@pytest.mark.parametrize(
    ("budget", "before", "after", "levels"),
    [
        (100, 0, 79, []),
        (100, 79, 80, ["warning"]),
        (100, 80, 94, []),
        (100, 70, 100, ["warning", "critical", "exhausted"]),
        (100, 100, 150, []),
        (1_000_000, 799_999, 800_000, ["warning"]),
        (0, 0, 10, []),
    ],
)
def test_crossed_thresholds(budget: int, before: int, after: int, levels: list[str]) -> None:
    assert [level for _, level in crossed(budget, before, after)] == levels


async def test_each_threshold_alerts_once_under_concurrent_reports_and_a_raise_rearms_it(
    replicas: list[str], make_agent: MakeAgent, admin_headers: dict[str, str]
) -> None:
    agent = await make_agent(budget=10)
    cost, calls = 0.1, 120  # $12 against $10: every threshold is crossed, the last by an overdraw
    async with (
        open_feed(replicas[0], admin_headers["Authorization"].removeprefix("Bearer ")) as reader,
        httpx.AsyncClient(timeout=30) as http,
    ):
        leases = []
        for url in replicas:  # one lease per replica, $10 granted in all
            async with httpx.AsyncClient(base_url=url) as replica:
                leases.append((await open_lease(replica, agent, 5))["lease_id"])

        async def spend(worker: int, count: int) -> None:
            base = replicas[worker % 2]
            for i in range(count):
                body = usage(f"ca-{worker}-{i}-{secrets.token_hex(3)}", leases[worker % 2], cost)
                response = await http.post(f"{base}/api/v1/budget/report", headers=agent.headers, json=body)
                assert response.status_code == 204, response.text

        async def burst(count_per_worker: int, workers: int = 12) -> None:
            await asyncio.gather(*(spend(w, count_per_worker) for w in range(workers)))

        def calls_seen(n: int) -> object:
            return lambda ms: sum(isinstance(m, AgentEvent) and m.agent_id == agent.id for m in ms) >= n

        await burst(calls // 12)
        await reader.wait_for(calls_seen(calls))  # alerts travel with the calls that crossed them
        alerts = [(a.level, a.threshold_percent) for a in reader.of_type(CostAlert) if a.agent_id == agent.id]
        assert sorted(alerts) == [("critical", 95), ("exhausted", 100), ("warning", 80)], alerts

        raised = await http.put(
            f"{replicas[1]}/api/v1/limits/agents/{agent.id}/budget",
            headers=admin_headers,
            json={"budget": 20},
        )
        assert raised.status_code == 200, raised.text
        await burst(4)  # 48 more calls: $16.80 of $20, past 80 % once more, not yet 95 %
        await reader.wait_for(calls_seen(calls + 48))
    alerts = [(a.level, a.agent.budget) for a in reader.of_type(CostAlert) if a.agent_id == agent.id]
    assert sorted(alerts) == [("critical", 10.0), ("exhausted", 10.0), ("warning", 10.0), ("warning", 20.0)]
    assert len({m.event_id for m in reader.of_type(AgentEvent) if m.agent_id == agent.id}) == calls + 48


async def test_lease_refused_and_expired_are_announced(
    replicas: list[str],
    make_agent: MakeAgent,
    admin_headers: dict[str, str],
    app: Litestar,
    pool: asyncpg.Pool,
) -> None:
    agent = await make_agent(budget=1)
    async with (
        open_feed(replicas[1], admin_headers["Authorization"].removeprefix("Bearer ")) as reader,
        httpx.AsyncClient(base_url=replicas[0]) as http,
    ):
        lease = await open_lease(http, agent, 1)
        refused = await http.post(
            "/api/v1/budget/handshake", headers=agent.headers, json={"requested_budget": 1}
        )
        assert refused.status_code == 403, refused.text
        # the sweeper's step, run here with the clock a day ahead and the in-process app's publisher
        assert await expire_leases(pool, utcnow() + timedelta(days=1), publisher=app.state.publisher) >= 1

        def mine(action: str) -> object:
            return lambda ms: any(
                isinstance(m, LeaseEvent) and m.agent_id == agent.id and m.action == action for m in ms
            )

        await reader.wait_for(mine("expired"))
    events = [(m.action, m.lease_id, m.amount) for m in reader.of_type(LeaseEvent) if m.agent_id == agent.id]
    assert events == [
        ("granted", lease["lease_id"], 1.0),
        ("refused", None, 1.0),
        ("expired", lease["lease_id"], 1.0),
    ]
