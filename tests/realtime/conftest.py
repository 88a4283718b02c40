"""Real control-plane processes serving ``/ws``, users with agents of their own, and a feed reader."""

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from iron import feed
from iron.realtime import Error, ServerMessage, decode_server_message
from tests.conftest import AgentHandle, control_planes, login

# fast heartbeats and credential checks, so the tests see them within a second
REALTIME_ENV = {"IRON_WS_HEARTBEAT_S": "0.5", "IRON_WS_RECHECK_S": "0.3", "IRON_WS_AUTH_TIMEOUT_S": "1"}
WAIT_S = 15.0  # how long a test waits for a message before it fails


@pytest.fixture(scope="session")
async def replicas(
    env: dict[str, str], client: httpx.AsyncClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[str]]:
    """Two control-plane processes on the test database and Redis: replica A and replica B."""
    log_dir = tmp_path_factory.mktemp("realtime-logs")
    async with control_planes({**env, **REALTIME_ENV}, log_dir, "a", "b") as urls:
        yield urls


@dataclass
class Feed:
    """A connected client, reading every message in the background."""

    socket: ClientConnection
    raw: list[str] = field(default_factory=list)
    messages: list[ServerMessage] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for text in self.socket:
                self.raw.append(str(text))
                self.messages.append(decode_server_message(text))
                self.arrived.set()
        self.closed.set()
        self.arrived.set()

    async def wait_for(
        self, predicate: Callable[[list[ServerMessage]], bool], timeout_s: float = WAIT_S
    ) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate(self.messages):
                if self.closed.is_set():
                    raise AssertionError(f"closed ({self.close_code}) before the wait ended: {self.raw[-3:]}")
                self.arrived.clear()
                await self.arrived.wait()

    def of_type(self, kind: type[Any]) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]

    async def wait_closed(self, timeout_s: float = WAIT_S) -> int | None:
        async with asyncio.timeout(timeout_s):
            await self.closed.wait()
        return self.close_code

    @property
    def close_code(self) -> int | None:
        return self.socket.close_code


@contextlib.asynccontextmanager
async def open_feed(base_url: str, token: str, **options: Any) -> AsyncIterator[Feed]:
    async with feed.connect(base_url, token, **options) as socket:
        reader = Feed(socket)
        task = asyncio.create_task(reader.read())
        try:
            yield reader
        finally:
            await socket.close()
            await task


async def refusal(base_url: str, first_message: str | None) -> tuple[Error, int | None]:
    """Connect, send ``first_message`` (or nothing), and return the ERROR and the close code."""
    async with websockets.connect(feed.feed_url(base_url)) as socket:
        if first_message is not None:
            await socket.send(first_message)
        message = decode_server_message(await socket.recv())
        assert isinstance(message, Error), message
        with pytest.raises(websockets.ConnectionClosed):
            await socket.recv()
        return message, socket.close_code


PASSWORD = "a long enough password 123"  # every person's


@dataclass(frozen=True)
class Person:
    id: str
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def make_person(client: httpx.AsyncClient, admin_headers: dict[str, str], role: str = "user") -> Person:
    email = f"{role}-{secrets.token_hex(4)}@example.com"
    response = await client.post(
        "/api/v1/users",
        headers=admin_headers,
        json={"email": email, "name": f"{role} person", "role": role, "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    return Person(response.json()["id"], email, await session_token(client, email))


async def session_token(client: httpx.AsyncClient, email: str) -> str:
    """A new session's access token."""
    headers = await login(client, email, PASSWORD)
    return headers["Authorization"].removeprefix("Bearer ")


async def own_agent(client: httpx.AsyncClient, owner: Person, budget: float = 100.0) -> AgentHandle:
    response = await client.post(
        "/api/v1/agents",
        headers=owner.headers,
        json={"name": f"agent-{secrets.token_hex(3)}", "budget": budget},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return AgentHandle(body["id"], body["ic_token"]["token"])


def usage(request_id: str, lease_id: str, cost_usd: float) -> dict[str, Any]:
    return {
        "lease_id": lease_id,
        "request_id": request_id,
        "input_tokens": 100,
        "output_tokens": 20,
        "cost_usd": cost_usd,
        "model": "gpt-4o-mini",
        "provider": "openai",
        "timestamp": "2030-01-01T00:00:00Z",
    }
