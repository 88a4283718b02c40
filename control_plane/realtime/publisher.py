"""Publishes feed messages after a mutation committed, and never makes the mutation wait or fail.

Services call the synchronous methods below once their transaction committed:
each only queues. One task per process takes the queue in order, reads the
agent's ledger and owner as they are now (owner decides the route), and
publishes through the channels plugin. A Redis or database outage costs the
messages of that moment and a log line, never a report, an approval or a
logout; a full queue drops the newest message the same way.
"""

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

import asyncpg
from litestar.channels import ChannelsPlugin
from litestar.datastructures import State
from redis.exceptions import NoScriptError

from control_plane.agents import repository as agents
from control_plane.agents.repository import AgentRow
from control_plane.agents.schemas import to_wire
from control_plane.realtime.alerts import Crossing
from control_plane.realtime.channels import RECHECK, Routing
from iron.money import usd
from iron.realtime import (
    AgentAction,
    AgentEvent,
    AgentState,
    AgentUpdated,
    BudgetRequestEvent,
    CostAlert,
    LeaseAction,
    LeaseEvent,
    Message,
    RequestAction,
    encode,
)
from iron.timefmt import iso, utcnow

log = logging.getLogger("iron.control_plane")

QUEUE_SIZE = 10_000
PUBLISH_TIMEOUT_S = 2.0


class Usage(Protocol):
    """One LLM call as the ledger or analytics store recorded it; cost in microdollars."""

    @property
    def event_id(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cost(self) -> int: ...
    @property
    def status(self) -> str: ...


class BudgetRequestChange(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def agent_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def requested_budget(self) -> int: ...
    @property
    def approved_budget(self) -> int | None: ...


def agent_state(row: AgentRow) -> AgentState:
    """The agent as ``GET /api/v1/agents/{id}`` shows it, cut to what the feed carries."""
    agent = to_wire(row)
    return AgentState(**{field: getattr(agent, field) for field in AgentState.__struct_fields__})


Build = Callable[[AgentState, str], list[Message]]
"""Messages about one agent, from its state at publish time and the timestamp."""

Job = Callable[[], Awaitable[None]]


def of(state: State) -> "Publisher":
    """The process's publisher (made at start-up)."""
    publisher: Publisher = state.publisher
    return publisher


class Publisher:
    def __init__(self, channels: ChannelsPlugin, routing: Routing, pool: asyncpg.Pool) -> None:
        self._channels = channels
        self._routing = routing
        self._pool = pool
        self._queue: asyncio.Queue[tuple[str, Job]] = asyncio.Queue(QUEUE_SIZE)

    def usage(self, agent_id: str, events: Sequence[Usage], alerts: Sequence[Crossing] = ()) -> None:
        """AGENT_EVENT per new call (never for a duplicate), then COST_ALERT per crossed threshold."""

        def build(agent: AgentState, now: str) -> list[Message]:
            calls: list[Message] = [
                AgentEvent(
                    timestamp=now,
                    agent_id=agent_id,
                    event_id=event.event_id,
                    model=event.model,
                    provider=event.provider,
                    input_tokens=event.input_tokens,
                    output_tokens=event.output_tokens,
                    cost_usd=usd(event.cost, 6),
                    status=event.status,
                    agent=agent,
                )
                for event in events
            ]
            return calls + [
                CostAlert(timestamp=now, agent_id=agent_id, level=level, threshold_percent=pct, agent=agent)
                for pct, level in alerts
            ]

        if events or alerts:
            self._put(agent_id, build)

    def lease(self, agent_id: str, action: LeaseAction, lease_id: str | None, amount: int) -> None:
        def build(agent: AgentState, now: str) -> list[Message]:
            return [
                LeaseEvent(
                    timestamp=now,
                    action=action,
                    agent_id=agent_id,
                    lease_id=lease_id,
                    amount=usd(amount, 6),
                    agent=agent,
                )
            ]

        self._put(agent_id, build)

    def budget_request(self, action: RequestAction, request: BudgetRequestChange) -> None:
        def build(agent: AgentState, now: str) -> list[Message]:
            approved = request.approved_budget
            return [
                BudgetRequestEvent(
                    timestamp=now,
                    action=action,
                    request_id=request.id,
                    agent_id=request.agent_id,
                    status=request.status,
                    requested_budget=usd(request.requested_budget),
                    approved_budget=None if approved is None else usd(approved),
                    agent=agent,
                )
            ]

        self._put(request.agent_id, build)

    def agent(self, agent_id: str, action: AgentAction, previous_owner_id: str | None = None) -> None:
        """AGENT_UPDATED after the agent itself changed; ``previous_owner_id``: it changed hands,
        and its former owner learns it too (the new owner is read as for every message)."""

        def build(agent: AgentState, now: str) -> list[Message]:
            return [AgentUpdated(timestamp=now, action=action, agent_id=agent_id, agent=agent)]

        also = (previous_owner_id,) if previous_owner_id else ()
        self._put(agent_id, build, also, with_deleted=action == "deleted")

    def recheck(self, user_id: str) -> None:
        """A credential of the user ended or their role changed: their sockets on every replica
        check theirs at once (each decides for itself whether it is the one that ended)."""
        job = functools.partial(self._send, RECHECK, [self._routing.control(user_id)])
        self._enqueue(f"user {user_id}", job)

    def _put(
        self, agent_id: str, build: Build, also: Sequence[str] = (), *, with_deleted: bool = False
    ) -> None:
        self._enqueue(agent_id, functools.partial(self._publish, agent_id, build, also, with_deleted))

    def _enqueue(self, about: str, job: Job) -> None:
        try:
            self._queue.put_nowait((about, job))
        except asyncio.QueueFull:
            log.warning("realtime: publish queue full; a message about %s was dropped", about)

    async def _publish(self, agent_id: str, build: Build, also: Sequence[str], with_deleted: bool) -> None:
        row = await agents.by_id(self._pool, agent_id, with_deleted=with_deleted)
        if row is None:  # deleted meanwhile: nobody may read it any more
            return
        frames = [encode(message) for message in build(agent_state(row), iso(utcnow()))]
        # One pub/sub message per mutation; each line is one WebSocket frame (JSON has no raw newline).
        await self._send(b"\n".join(frames), self._routing.routes(row.owner_id, *also))

    async def _send(self, payload: bytes, channels: list[str]) -> None:
        try:
            await self._channels.wait_published(payload, channels)
        except NoScriptError:  # the publish script was flushed again between its reload and its use
            await self._channels.wait_published(payload, channels)

    async def run(self) -> None:
        while True:
            about, job = await self._queue.get()
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                    await job()
            except Exception as exc:  # whatever it was, the next message must still go out
                log.warning("realtime: a message about %s was not published (%s)", about, type(exc).__name__)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["Publisher"]:
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
