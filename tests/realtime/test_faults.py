"""The feed under faults: a client that stops reading, and Redis going away and coming back."""

import asyncio
import contextlib
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from iron.embedded import EmbeddedValkey, free_port
from iron.realtime import (
    CLOSE_TOO_SLOW,
    AgentEvent,
    Auth,
    StateUpdate,
    decode_server_message,
    encode,
)
from tests.conftest import MakeAgent, open_lease, start_control_plane
from tests.realtime.conftest import REALTIME_ENV, open_feed, usage

BATCHES, PER_BATCH = 150, 50  # ~5 MB of messages: more than the socket buffers of a client that stopped
PACE_S = 0.03  # between reports, so that a reading client keeps up on a busy machine
MODEL = "m" * 150  # long names make big messages, so the buffers fill sooner


def _batch(lease_id: str, n: int) -> dict[str, Any]:
    calls = [usage(f"slow-{n}-{i}-{secrets.token_hex(3)}", lease_id, 0.0001) for i in range(PER_BATCH)]
    for call in calls:
        call["model"] = MODEL
    return {"lease_id": lease_id, "reports": calls}


@dataclass
class _Stalled:
    sock: socket.socket
    protocol: ClientProtocol


def _stalled_client(port: int, token: str) -> _Stalled:
    """A real client that authenticates, then reads nothing: its tiny receive window fills at once."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window stays small
    sock.connect(("127.0.0.1", port))
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"))
    protocol.send_request(protocol.connect())
    sock.sendall(b"".join(protocol.data_to_send()))
    while protocol.handshake_exc is None and not protocol.events_received():
        protocol.receive_data(sock.recv(4096))
        if protocol.state is State.OPEN:
            break
    protocol.send_text(encode(Auth(type="auth", token=token)))
    sock.sendall(b"".join(protocol.data_to_send()))
    return _Stalled(sock, protocol)


def _read_to_the_end(client: _Stalled) -> tuple[list[Any], int | None]:
    """Everything the server had sent before it dropped the client, and the close code."""
    client.sock.settimeout(30)
    messages: list[Any] = []
    while chunk := client.sock.recv(1 << 16):
        client.protocol.receive_data(chunk)
        for event in client.protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                messages.append(decode_server_message(event.data))
    client.protocol.receive_eof()
    close = client.protocol.close_rcvd
    return messages, None if close is None else close.code


def _calls(messages: list[Any], agent_id: str) -> int:
    return sum(isinstance(m, AgentEvent) and m.agent_id == agent_id for m in messages)


async def test_a_client_that_stops_reading_is_dropped_and_a_fast_one_gets_everything(
    env: dict[str, str], make_agent: MakeAgent, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    server = await start_control_plane({**env, **REALTIME_ENV, "IRON_WS_BACKLOG": "20"}, tmp_path, "cp-slow")
    token = admin_headers["Authorization"].removeprefix("Bearer ")
    agent = await make_agent(budget=100)
    slow = _stalled_client(server.port, token)
    try:
        async with (
            open_feed(server.url, token) as fast,
            httpx.AsyncClient(base_url=server.url, timeout=30) as http,
        ):
            lease = await open_lease(http, agent, 50)
            for n in range(BATCHES):
                response = await http.post(
                    "/api/v1/budget/report", headers=agent.headers, json=_batch(lease["lease_id"], n)
                )
                assert response.status_code == 200, response.text
                await asyncio.sleep(PACE_S)
            await fast.wait_for(lambda ms: _calls(ms, agent.id) == BATCHES * PER_BATCH, timeout_s=60)
            assert not fast.closed.is_set()
        received, close_code = await asyncio.to_thread(_read_to_the_end, slow)
    finally:
        slow.sock.close()
        server.cleanup()
    # dropped: the connection ended part way. The close frame (4429) waits behind data the client
    # never read, so a client this stuck gets the end of the stream without it.
    assert 0 < _calls(received, agent.id) < BATCHES * PER_BATCH, "the stalled client was never dropped"
    assert close_code in (None, CLOSE_TOO_SLOW)


async def test_reports_succeed_while_redis_is_down_and_the_feed_resumes_after(
    env: dict[str, str],
    make_agent: MakeAgent,
    admin_headers: dict[str, str],
    pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", port=free_port())
    await asyncio.to_thread(valkey.start)
    server = await start_control_plane(
        {**env, **REALTIME_ENV, "REDIS_URL": valkey.url()}, tmp_path, "cp-redis-outage"
    )
    agent = await make_agent(budget=10)

    async def report(http: httpx.AsyncClient, lease_id: str) -> str:
        request_id = f"ro-{secrets.token_hex(4)}"
        body = usage(request_id, lease_id, 0.5)
        response = await http.post("/api/v1/budget/report", headers=agent.headers, json=body)
        assert response.status_code == 204, response.text
        return request_id

    try:
        async with (
            open_feed(server.url, admin_headers["Authorization"].removeprefix("Bearer ")) as reader,
            httpx.AsyncClient(base_url=server.url, timeout=30) as http,
        ):
            await reader.wait_for(lambda ms: any(isinstance(m, StateUpdate) for m in ms))
            lease = await open_lease(http, agent, 5)
            before = await report(http, lease["lease_id"])
            await reader.wait_for(lambda ms: any(getattr(m, "event_id", None) == before for m in ms))

            await asyncio.to_thread(valkey.stop)
            during = [await report(http, lease["lease_id"]) for _ in range(3)]
            returned = await http.post("/api/v1/budget/return", headers=agent.headers, json=lease)
            assert returned.status_code == 200, returned.text
            spent = await pool.fetchval("SELECT spent_micros FROM agents WHERE id = $1", agent.id)
            assert spent == 4 * 500_000  # charged once each while Redis was away

            await asyncio.to_thread(valkey.start)
            lease = await open_lease(http, agent, 2)
            after: list[str] = []  # until the replica has subscribed again, messages have no reader

            def resumed(messages: list[Any]) -> bool:
                return any(getattr(m, "event_id", None) in after for m in messages)

            for _ in range(40):
                after.append(await report(http, lease["lease_id"]))
                with contextlib.suppress(TimeoutError):
                    await reader.wait_for(resumed, timeout_s=0.25)
                    break
            assert resumed(reader.messages), "the feed did not resume after Redis came back"
            assert not reader.closed.is_set()
    finally:
        server.cleanup()
        await asyncio.to_thread(valkey.stop)
    seen = {m.event_id for m in reader.of_type(AgentEvent)}
    assert before in seen
    assert not seen & set(during)  # published while Redis was away: dropped, with a log line
