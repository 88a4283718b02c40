"""The sidecar's HTTP/1.1 server on real sockets: framing, keep-alive, pipelining, limits, shutdown."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import httpx
import pytest

from sidecar.http import HttpServer, Reply, Request
from sidecar.server import error_reply


@dataclass
class Echo:
    """A handler that answers with what it saw; ``gate`` holds requests to ``/slow``."""

    seen: list[Request] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: Request) -> Reply:
        self.seen.append(request)
        if request.path == "/slow":
            await self.gate.wait()
        if request.path == "/fail":
            raise RuntimeError("a bug in a handler")
        if request.path == "/empty":
            return 204, b"", b"x-iron-outcome: charged\r\n"
        body = {
            "method": request.method,
            "path": request.path,
            "body": request.body.decode(),
            "local": request.local_peer,
        }
        return 200, json.dumps(body).encode(), b"content-type: application/json\r\n"


@dataclass
class Reply_:
    status: int
    headers: dict[str, str]
    body: bytes


class Replies:
    """Frames replies off a raw connection with httptools."""

    def __init__(self) -> None:
        self.done: list[Reply_] = []
        self._headers: dict[str, str] = {}
        self._body = b""
        self._parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append(Reply_(self._parser.get_status_code(), self._headers, self._body))
        self._headers, self._body = {}, b""

    def feed(self, data: bytes) -> None:
        self._parser.feed_data(data)


Open = Callable[..., Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@pytest.fixture
async def served() -> AsyncIterator[tuple[HttpServer, Echo]]:
    echo = Echo()
    server = HttpServer(echo, error_reply, max_body=1024, keep_alive_s=1)
    await server.start()
    yield server, echo
    echo.gate.set()
    await server.stop()


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes, count: int
) -> tuple[list[Reply_], bool]:
    """Send ``raw``, read ``count`` replies; also whether the server then closed the connection."""
    if raw:
        writer.write(raw)
    replies = Replies()
    while len(replies.done) < count:
        data = await asyncio.wait_for(reader.read(65536), 5)
        assert data, f"closed after {len(replies.done)} of {count} replies"
        replies.feed(data)
    try:
        closed = await asyncio.wait_for(reader.read(1), 0.3) == b""
    except TimeoutError:
        closed = False
    return replies.done, closed


def post(path: str, body: bytes = b"{}", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (
        path.encode(),
        len(body),
        extra,
        body,
    )


async def test_keep_alive_and_pipelined_requests_answered_in_order(served: tuple[HttpServer, Echo]) -> None:
    server, echo = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(post("/slow", b"first") + post("/v1/reserve?x=1", b"second"))
    await asyncio.sleep(0.1)
    assert [r.path for r in echo.seen] == ["/slow"]  # one at a time: the second waits its turn
    echo.gate.set()
    replies, closed = await exchange(reader, writer, post("/third", b"third"), 3)
    assert [json.loads(r.body)["body"] for r in replies] == ["first", "second", "third"]
    assert json.loads(replies[1].body)["path"] == "/v1/reserve"  # the query string is not the path
    assert not closed
    assert server.accepted == 1
    first = replies[0]
    assert first.status == 200
    assert first.headers["content-length"] == str(len(first.body))
    assert first.headers["date"].endswith("GMT")
    assert json.loads(first.body)["local"] is True
    writer.close()


async def test_a_reply_is_one_write_and_204_has_no_length(served: tuple[HttpServer, Echo]) -> None:
    server, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(post("/empty"))
    data = await asyncio.wait_for(reader.read(65536), 5)
    assert data.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert data.endswith(b"\r\n\r\n")  # the whole reply arrived in one read
    assert b"content-length" not in data.lower()
    assert b"x-iron-outcome: charged\r\n" in data
    writer.close()


async def test_head_has_no_body(served: tuple[HttpServer, Echo]) -> None:
    server, _ = served
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        response = await http.head("/anything")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


@pytest.mark.parametrize(
    ("raw", "closes"),
    [
        (b"GET /x HTTP/1.0\r\n\r\n", True),
        (b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", False),
        (b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", True),
        (b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n", False),
    ],
)
async def test_connection_close_and_http_1_0(
    served: tuple[HttpServer, Echo], raw: bytes, closes: bool
) -> None:
    server, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    (reply,), closed = await exchange(reader, writer, raw, 1)
    assert reply.status == 200
    assert closed is closes
    assert (reply.headers.get("connection") == "close") is closes
    writer.close()


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "BAD_REQUEST"),
        (b"POST /x HTTP/1.1\r\nContent-Length: nope\r\n\r\n", 400, "BAD_REQUEST"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414, "BAD_REQUEST"),
        (post("/x", b"{" + b" " * 2000 + b"}"), 413, "REQUEST_TOO_LARGE"),
        (
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"401\r\n"
            + b"a" * 1025
            + b"\r\n0\r\n\r\n",
            413,
            "REQUEST_TOO_LARGE",
        ),
    ],
)
async def test_refused_requests_answer_in_the_error_format_and_close(
    served: tuple[HttpServer, Echo], raw: bytes, status: int, code: str
) -> None:
    server, echo = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    (reply,), closed = await exchange(reader, writer, raw, 1)
    assert reply.status == status
    error = json.loads(reply.body)["error"]
    assert error["code"] == code
    assert error["request_id"] == reply.headers["x-request-id"]
    assert "Traceback" not in reply.body.decode()
    assert closed
    assert echo.seen == []  # the handler never saw it
    writer.close()


async def test_requests_before_a_malformed_one_are_still_answered(served: tuple[HttpServer, Echo]) -> None:
    server, echo = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    replies, closed = await exchange(reader, writer, post("/slow", b"ok") + b"GARBAGE\r\n\r\n", 0)
    echo.gate.set()
    replies, closed = await exchange(reader, writer, b"", 2)
    assert [r.status for r in replies] == [200, 400]
    assert closed
    writer.close()


async def test_a_flood_of_pipelined_requests_is_answered_in_order(served: tuple[HttpServer, Echo]) -> None:
    server, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    bodies = [b"%04d" % i + b"x" * 900 for i in range(300)]
    writer.write(b"".join(post("/x", body) for body in bodies))  # ~300 KB of replies, unread for now
    await asyncio.sleep(0.3)
    replies, _ = await exchange(reader, writer, b"", len(bodies))
    assert [json.loads(r.body)["body"].encode() for r in replies] == bodies
    assert server.accepted == 1
    writer.close()


async def test_a_client_that_half_closes_gets_its_answers(served: tuple[HttpServer, Echo]) -> None:
    server, echo = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(post("/slow", b"one") + post("/x", b"two"))
    writer.write_eof()  # sent all it will; still reading
    await asyncio.sleep(0.1)
    echo.gate.set()
    replies, closed = await exchange(reader, writer, b"", 2)
    assert [json.loads(r.body)["body"] for r in replies] == ["one", "two"]
    assert closed
    writer.close()


async def test_chunked_request_bodies_are_joined(served: tuple[HttpServer, Echo]) -> None:
    server, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    raw = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    (reply,), _ = await exchange(reader, writer, raw, 1)
    assert json.loads(reply.body)["body"] == "abcde"
    writer.close()


async def test_a_failing_handler_is_a_bare_500_and_the_connection_lives_on(
    served: tuple[HttpServer, Echo], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = served
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        failed = await http.post("/fail")
        assert failed.status_code == 500
        assert failed.content == b""
        assert (await http.post("/after")).status_code == 200
    assert server.accepted == 1
    assert "RuntimeError" in caplog.text
    assert "a bug in a handler" not in caplog.text  # the type only, never the message


async def test_idle_connections_close_after_the_keep_alive(served: tuple[HttpServer, Echo]) -> None:
    server, _ = served  # keep_alive_s=1
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    (reply,), _ = await exchange(reader, writer, post("/x"), 1)
    assert reply.status == 200
    assert await asyncio.wait_for(reader.read(1), 5) == b""  # closed by the server within ~2 s
    writer.close()


async def test_stop_answers_requests_in_flight_then_refuses_new_connections() -> None:
    echo = Echo()
    server = HttpServer(echo, error_reply)
    await server.start()
    port = server.port
    busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    busy_writer.write(post("/slow", b"in flight"))
    await asyncio.sleep(0.1)
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.1)
    assert await asyncio.wait_for(idle_reader.read(1), 5) == b""  # the idle one is closed at once
    assert not stopping.done()  # still waiting for the request in flight
    echo.gate.set()
    (reply,), closed = await exchange(busy_reader, busy_writer, b"", 1)
    assert json.loads(reply.body)["body"] == "in flight"
    assert reply.headers["connection"] == "close"
    assert closed
    await asyncio.wait_for(stopping, 5)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    busy_writer.close()
    idle_writer.close()


async def test_unix_socket_peers_are_local(tmp_path: Path) -> None:
    echo = Echo()
    server = HttpServer(echo, error_reply)
    path = str(tmp_path / "http.sock")
    await server.start(uds=path)
    try:
        transport = httpx.AsyncHTTPTransport(uds=path)
        async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as http:
            reply = await http.post("/v1/provider", content=b"{}")
        assert reply.json() == {"method": "POST", "path": "/v1/provider", "body": "{}", "local": True}
    finally:
        await server.stop()
    assert not _exists(path)  # removed on the way out


def _exists(path: str) -> bool:
    return Path(path).exists()


def _stale_socket(path: str) -> None:
    """What a crashed server leaves behind: a socket file nobody listens on."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(path)


async def test_a_stale_unix_socket_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "http.sock")
    _stale_socket(path)
    server = HttpServer(Echo(), error_reply)
    await server.start(uds=path)
    try:
        transport = httpx.AsyncHTTPTransport(uds=path)
        async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as http:
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await server.stop()
