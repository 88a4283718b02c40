"""The runtime SDK over real HTTP: a sidecar on its server, real control planes, Redis, PostgreSQL."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sidecar.app import Sidecar
from sidecar.client import AsyncSidecarClient, BudgetExhausted, Call, SidecarClient, SidecarError
from sidecar.config import SidecarSettings
from sidecar.http import HttpServer
from sidecar.server import error_reply
from tests.conftest import FAKE_PROVIDER_KEY, AgentHandle, MakeAgent
from tests.ledger_checks import LedgerState, assert_ledger_invariants

USAGE: dict[str, Any] = {"input_tokens": 100, "output_tokens": 20, "model": "gpt-4o-mini"}


@dataclass
class Served:
    """A sidecar behind its real HTTP server in the test's event loop."""

    agent: AgentHandle
    sidecar: Sidecar
    server: HttpServer
    url: str
    stopped: bool = False

    async def stop(self) -> None:
        """Stop serving, then flush the journal and return the lease (what SIGTERM does)."""
        if not self.stopped:
            self.stopped = True
            await self.server.stop()
            await self.sidecar.stop()


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(control_plane_processes: list[str], redis_url: str) -> AsyncIterator[Serve]:
    running: list[Served] = []

    async def start(agent: AgentHandle, lease_usd: float = 5, uds: str | None = None) -> Served:
        env = {
            "IRON_CONTROL_PLANE_URL": control_plane_processes[0],
            "IRON_IC_TOKEN": agent.ic_token,
            "REDIS_URL": redis_url,
            "IRON_SIDECAR_ID": f"{agent.id}-sdk",
            "IRON_LEASE_USD": str(lease_usd),
        }
        sidecar = Sidecar(SidecarSettings.from_env(env, heartbeat_s=0.2, batch_age_ms=20))
        server = HttpServer(await sidecar.start(), error_reply)
        await server.start(uds=uds)
        port = server.port if uds is None else 0
        served = Served(agent, sidecar, server, f"http://127.0.0.1:{port}")
        running.append(served)
        return served

    yield start
    for served in reversed(running):
        await served.stop()


async def settled_ledger(pool: asyncpg.Pool, served: Served) -> LedgerState:
    """The ledger after the sidecar shut down: invariants hold and no lease is left open."""
    await served.stop()
    state = await assert_ledger_invariants(pool, served.agent.id)
    assert state.outstanding == 0
    return state


async def test_reserve_commit_report_cancel(pool: asyncpg.Pool, make_agent: MakeAgent, serve: Serve) -> None:
    served = await serve(await make_agent(budget=10), lease_usd=2)
    async with AsyncSidecarClient(served.url) as client:
        reservation = await client.reserve(0.5)
        assert reservation.remaining_usd == 1.5
        assert await client.commit(reservation.reservation_id, 0.4, **USAGE) == "charged"
        assert await client.commit(reservation.reservation_id, 0.4, **USAGE) == "duplicate"
        assert await client.report("rep-1", 0.1, **USAGE, provider="openai", latency_ms=12) == "charged"
        held = await client.reserve(0.3, request_id="named-1")
        assert held.reservation_id == "named-1"
        assert (await client.budget()).reserved_usd == 0.3
        assert await client.cancel("named-1") is True
        assert await client.cancel("named-1") is False
        budget = await client.budget()
        assert (budget.spent_usd, budget.reserved_usd) == (0.5, 0.0)
        assert (await client.provider()).api_key == FAKE_PROVIDER_KEY
    assert (await settled_ledger(pool, served)).spent == 500_000


async def test_spend_commits_what_the_block_set(
    pool: asyncpg.Pool, make_agent: MakeAgent, serve: Serve
) -> None:
    served = await serve(await make_agent(budget=10))
    async with AsyncSidecarClient(served.url) as client:
        async with client.spend(0.2) as call:
            assert (await client.budget()).reserved_usd == 0.2
            call.cost_usd, call.input_tokens, call.output_tokens, call.model = 0.15, 300, 40, "gpt-4o"
        assert call.outcome == "charged"
        async with client.spend(0.2) as unused:
            pass  # no LLM call made: nothing spent, the hold is released
        assert unused.outcome is None
        budget = await client.budget()
        assert (budget.spent_usd, budget.reserved_usd) == (0.15, 0.0)
    state = await settled_ledger(pool, served)
    assert state.spent == 150_000
    row = await pool.fetchrow(
        "SELECT status, model, input_tokens, latency_ms FROM usage_events WHERE agent_id = $1",
        served.agent.id,
    )
    assert row is not None
    assert (row["status"], row["model"], row["input_tokens"]) == ("completed", "gpt-4o", 300)
    assert row["latency_ms"] is not None


class ProviderDown(Exception):
    """The LLM call failed."""


async def failing_call(client: AsyncSidecarClient, calls: list[Call], billed_usd: float | None) -> None:
    """A spend block whose LLM call fails, after the provider billed ``billed_usd`` if not None."""
    async with client.spend(0.3) as call:
        calls.append(call)
        call.cost_usd, call.model = billed_usd, "gpt-4o"
        raise ProviderDown


def failing_sync_call(client: SidecarClient, calls: list[Call], billed_usd: float | None) -> None:
    with client.spend(0.2) as call:
        calls.append(call)
        call.cost_usd = billed_usd
        raise ProviderDown


async def test_spend_on_error_commits_failed_or_cancels(
    pool: asyncpg.Pool, make_agent: MakeAgent, serve: Serve
) -> None:
    served = await serve(await make_agent(budget=10))
    async with AsyncSidecarClient(served.url) as client:
        calls: list[Call] = []
        with pytest.raises(ProviderDown):
            await failing_call(client, calls, billed_usd=0.05)  # billed, then the call failed
        with pytest.raises(ProviderDown):
            await failing_call(client, calls, billed_usd=None)  # failed before any cost
        partial, nothing = calls
        assert (partial.outcome, nothing.outcome) == ("charged", None)
        assert (await client.budget()).reserved_usd == 0.0
    assert (await settled_ledger(pool, served)).spent == 50_000
    status = await pool.fetchval(
        "SELECT status FROM usage_events WHERE agent_id = $1 AND event_id = $2",
        served.agent.id,
        partial.reservation.reservation_id,
    )
    assert status == "failed"


async def test_budget_exhausted_is_raised_before_the_block(
    pool: asyncpg.Pool, make_agent: MakeAgent, serve: Serve
) -> None:
    served = await serve(await make_agent(budget=1), lease_usd=1)
    async with AsyncSidecarClient(served.url) as client:
        async with client.spend(0.6) as call:
            call.cost_usd = 0.6
        ran = False
        with pytest.raises(BudgetExhausted) as refused:
            async with client.spend(0.6):
                ran = True
        assert not ran
        assert (refused.value.status, refused.value.code) == (402, "BUDGET_EXHAUSTED")
        assert refused.value.remaining_usd == pytest.approx(0.4)
        assert isinstance(refused.value, SidecarError)
    assert (await settled_ledger(pool, served)).spent == 600_000


async def test_errors_carry_code_and_fields(make_agent: MakeAgent, serve: Serve) -> None:
    served = await serve(await make_agent(budget=5))
    async with AsyncSidecarClient(served.url) as client:
        with pytest.raises(SidecarError) as invalid:
            await client.commit("r-1", -1.0, input_tokens=-5, output_tokens=1, model="")
        assert (invalid.value.status, invalid.value.code) == (400, "VALIDATION_ERROR")
        assert set(invalid.value.fields) == {"cost_usd", "input_tokens", "model"}
        with pytest.raises(SidecarError) as bad_estimate:
            await client.reserve(-0.1)
        assert set(bad_estimate.value.fields) == {"estimated_cost_usd"}
    await served.stop()
    async with AsyncSidecarClient(served.url, timeout_s=1) as gone:
        with pytest.raises(SidecarError) as unreachable:
            await gone.budget()
    assert (unreachable.value.status, unreachable.value.code) == (0, "SIDECAR_UNREACHABLE")


def _sync_runtime(url: str) -> tuple[str, int]:
    """A threaded runtime's whole life with the sync client; returns the failed call's id and micros spent."""
    with SidecarClient(url) as client:
        reservation = client.reserve(0.2)
        assert client.commit(reservation.reservation_id, 0.1, **USAGE) == "charged"
        assert client.report("sync-rep", 0.02, **USAGE) == "charged"
        assert client.cancel(client.reserve(0.2).reservation_id) is True
        with client.spend(0.2) as call:
            call.cost_usd, call.model = 0.03, "gpt-4o"
        assert call.outcome == "charged"
        calls: list[Call] = []
        with pytest.raises(ProviderDown):
            failing_sync_call(client, calls, billed_usd=0.01)
        with pytest.raises(ProviderDown):
            failing_sync_call(client, calls, billed_usd=None)
        failed, cancelled = calls
        assert (failed.outcome, cancelled.outcome) == ("charged", None)
        ran = False
        with pytest.raises(BudgetExhausted), client.spend(100):
            ran = True
        assert not ran
        with pytest.raises(SidecarError) as invalid:
            client.report("", 0.1, **USAGE)
        assert set(invalid.value.fields) == {"request_id"}
        budget = client.budget()
        assert (budget.spent_usd, budget.reserved_usd) == (0.16, 0.0)
        assert client.provider().api_key == FAKE_PROVIDER_KEY
        return failed.reservation.reservation_id, 160_000


async def test_sync_client(pool: asyncpg.Pool, make_agent: MakeAgent, serve: Serve) -> None:
    served = await serve(await make_agent(budget=10), lease_usd=2)
    failed_id, spent = await asyncio.to_thread(_sync_runtime, served.url)
    assert (await settled_ledger(pool, served)).spent == spent
    status = await pool.fetchval(
        "SELECT status FROM usage_events WHERE agent_id = $1 AND event_id = $2", served.agent.id, failed_id
    )
    assert status == "failed"


def _sync_calls(url: str, n: int) -> None:
    with SidecarClient(url) as client:
        for _ in range(n):
            with client.spend(0.01) as call:
                call.cost_usd = 0.01


async def test_one_connection_is_reused(pool: asyncpg.Pool, make_agent: MakeAgent, serve: Serve) -> None:
    served = await serve(await make_agent(budget=10))
    async with AsyncSidecarClient(served.url) as client:
        for _ in range(50):
            async with client.spend(0.01) as call:
                call.cost_usd = 0.01
    assert served.server.accepted == 1  # 100 requests, one TCP connection
    await asyncio.to_thread(_sync_calls, served.url, 50)
    assert served.server.accepted == 2
    assert (await settled_ledger(pool, served)).spent == 100 * 10_000


def _sync_spent(socket_path: str) -> float:
    with SidecarClient(unix_socket=socket_path) as client:
        return client.budget().spent_usd


async def test_unix_socket(pool: asyncpg.Pool, make_agent: MakeAgent, serve: Serve, tmp_path: Path) -> None:
    socket_path = str(tmp_path / "sidecar.sock")
    served = await serve(await make_agent(budget=10), uds=socket_path)
    async with AsyncSidecarClient(unix_socket=socket_path) as client, client.spend(0.1) as call:
        call.cost_usd = 0.05
    assert await asyncio.to_thread(_sync_spent, socket_path) == 0.05
    assert (await settled_ledger(pool, served)).spent == 50_000
