"""The sidecar's HTTP/1.1 server: httptools parses, one task per request, one write per reply.

Every LLM call makes two requests here, so the server is on the hot path twice. On the
target machine, one run of the hot-path generator against a no-op app: uvicorn (httptools,
uvloop, ASGI) spent 51 µs of CPU per reserve+commit pair and answered in 0.38 ms at the
median at 1,000 pairs/s; this server 21 µs and 0.15 ms (the sidecar's whole budget is
0.5 ms). uvicorn also writes each reply in two system calls (head, then body) and builds
ASGI messages, an event and a timer per request. So the sidecar keeps what its runtime API
needs and nothing else:

* keep-alive (closed after ``keep_alive_s`` idle), HTTP/1.0 and ``Connection: close``;
* pipelined requests answered in order; reading pauses while many wait or the client is not
  taking its replies; a client that half-closes still gets its answers;
* bodies up to ``max_body`` (larger: 413 and close); malformed requests: 400 and close;
* every reply one write, with ``Content-Length`` (none on 204) and ``Date``;
* a graceful stop: no new connections, idle ones closed, requests in flight answered.

The handler gets a :class:`Request` and returns ``(status, body, header lines)``; it is the
handler's job to turn its own failures into replies (an escaped exception becomes a bare 500
here, logged by type only).
"""

import asyncio
import collections
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Final, NamedTuple, cast

import httptools

log = logging.getLogger("iron.sidecar")


class Request(NamedTuple):
    """One request (a tuple: one is made per request, and cheaply)."""

    method: str
    #: The path without the query string.
    path: str
    body: bytes
    #: The peer is on this host: TCP from a loopback address, or a Unix socket.
    local_peer: bool


#: Status, body, and extra header lines, each ``b"name: value\r\n"``.
Reply = tuple[int, bytes, bytes]
Handler = Callable[[Request], Awaitable[Reply]]
#: Makes the reply for a request the server refuses itself: (status, code, message).
ErrorReply = Callable[[int, str, str], Reply]

_LOOPBACK: Final = frozenset(("127.0.0.1", "::1", "::ffff:127.0.0.1"))
_MAX_URL: Final = 8 * 1024
#: Pipelined requests waiting beyond this pause reading from the connection.
_MAX_QUEUED: Final = 16
_STATUS_LINES: Final = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus if s.value >= 200
}
_NO_BODY: Final = frozenset((204, 304))


def _date() -> bytes:
    return b"date: %s\r\n" % formatdate(usegmt=True).encode()


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and answers them in order, one at a time."""

    def __init__(self, server: "HttpServer") -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._local = False
        self._url = b""
        self._body = b""
        self._queue: collections.deque[tuple[Request, bool]] = collections.deque()
        self._task: asyncio.Task[None] | None = None  # the request being answered
        self._paused = False  # reading, see _reading
        self._writes_blocked = False  # the client is not reading its replies
        self._eof = False  # the client has sent all it will
        #: What to answer, after the requests before it, when the client broke the protocol.
        self._refusal: Reply | None = None
        #: Seconds (ticks of the server's clock) this connection has been idle.
        self.idle_s = 0

    # -- asyncio callbacks --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is duck-typed
        peer = transport.get_extra_info("peername")
        self._local = not isinstance(peer, tuple) or peer[0] in _LOOPBACK  # a Unix socket has no host
        self._server.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._queue.clear()
        self._server.closed(self)

    def eof_received(self) -> bool:
        """The client sent all it will: answer what it asked (keeping the socket open), then close."""
        self._eof = True
        return not self.idle()

    def pause_writing(self) -> None:
        self._writes_blocked = True
        self._reading()

    def resume_writing(self) -> None:
        self._writes_blocked = False
        self._reading()

    def _reading(self) -> None:
        """Read only while the client is not too far ahead: few requests waiting, replies taken."""
        pause = len(self._queue) > _MAX_QUEUED or self._writes_blocked or self._refusal is not None
        if self._transport is not None and pause != self._paused:
            self._paused = pause
            if pause:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.idle_s = 0
        if self._refusal is not None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "BAD_REQUEST", "Protocol upgrades are not supported")
        except httptools.HttpParserError:
            self._refuse(400, "BAD_REQUEST", "Malformed HTTP request")

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url, self._body = b"", b""

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > _MAX_URL:
            self._refuse(414, "BAD_REQUEST", "Request target too long")

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) > self._server.max_body:
            self._refuse(413, "REQUEST_TOO_LARGE", "Request body too large")
        elif self._refusal is None:
            self._body += body

    def on_message_complete(self) -> None:
        if self._refusal is not None:
            return
        path = self._url.partition(b"?")[0].decode("ascii", "replace")
        request = Request(self._parser.get_method().decode("ascii"), path, self._body, self._local)
        self._queue.append((request, self._parser.should_keep_alive()))
        if self._task is None:
            self._next()
        elif len(self._queue) > _MAX_QUEUED:
            self._reading()

    # -- answering ----------------------------------------------------------------------------------

    def _next(self) -> None:
        request, keep_alive = self._queue.popleft()
        if self._paused:
            self._reading()
        self._task = self._server.loop.create_task(self._answer(request, keep_alive))

    async def _answer(self, request: Request, keep_alive: bool) -> None:
        try:
            status, body, headers = await self._server.handler(request)
        except Exception as exc:  # the handler's own guard failed: still answer, never leak
            log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.path)
            status, body, headers = 500, b"", b""
        self._task = None
        keep_alive = keep_alive and not self._server.stopping
        self._write(status, b"" if request.method == "HEAD" else body, headers, keep_alive, len(body))
        if not keep_alive:
            self.close()
        elif self._queue:
            self._next()
        elif self._refusal is not None:
            self._refused()
        elif self._eof:
            self.close()

    def _write(self, status: int, body: bytes, headers: bytes, keep_alive: bool, length: int) -> None:
        if self._transport is None:  # the client went away meanwhile
            return
        head = _STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status
        size = b"" if status in _NO_BODY else b"content-length: %d\r\n" % length
        close = b"" if keep_alive else b"connection: close\r\n"
        self._transport.write(b"%s%s%s%s%s\r\n%s" % (head, size, self._server.date, close, headers, body))

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Stop reading; answer the requests before this one, then this refusal, and close."""
        if self._refusal is not None:
            return
        self._refusal = self._server.error_reply(status, code, message)
        self._reading()
        if self._task is None and not self._queue:
            self._refused()

    def _refused(self) -> None:
        assert self._refusal is not None
        status, body, headers = self._refusal
        self._write(status, body, headers, False, len(body))
        self.close()

    def idle(self) -> bool:
        return self._task is None and not self._queue

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class HttpServer:
    """Serves ``handler`` on a TCP port or a Unix socket until :meth:`stop`."""

    def __init__(
        self,
        handler: Handler,
        error_reply: ErrorReply,
        *,
        keep_alive_s: int = 75,
        max_body: int = 64 * 1024,
    ) -> None:
        self.handler = handler
        self.error_reply = error_reply
        self.keep_alive_s = keep_alive_s
        self.max_body = max_body
        self.loop = asyncio.get_running_loop()
        self.date = _date()
        self.stopping = False
        #: Connections accepted since start (one per client that keeps its connection alive).
        self.accepted = 0
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._uds: str | None = None
        self._tick: asyncio.TimerHandle | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0, uds: str | None = None) -> None:
        if uds is not None:  # a stale socket file of an earlier run is replaced
            self._server = await self.loop.create_unix_server(lambda: _Connection(self), uds, backlog=4096)
            self._uds = uds
        else:
            self._server = await self.loop.create_server(
                lambda: _Connection(self), host, port, backlog=4096, reuse_address=True
            )
            for sock in self._server.sockets:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._tick = self.loop.call_later(1.0, self._every_second)

    @property
    def port(self) -> int:
        """The TCP port listened on (useful after ``port=0``)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def _every_second(self) -> None:
        """Keep the ``Date`` header current and close connections idle past the keep-alive."""
        self.date = _date()
        for conn in list(self._connections):
            if conn.idle():
                conn.idle_s += 1
                if conn.idle_s >= self.keep_alive_s:
                    conn.close()
        self._tick = self.loop.call_later(1.0, self._every_second)

    def opened(self, conn: _Connection) -> None:
        self._connections.add(conn)
        self.accepted += 1

    def closed(self, conn: _Connection) -> None:
        self._connections.discard(conn)

    async def serve(self, host: str, port: int, uds: str | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully. A signal only ends the serving:
        whoever called this runs its own shutdown afterwards (the sidecar flushes its journal
        and returns its lease)."""
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, stop.set)
        try:
            await self.start(host, port, uds)
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.loop.remove_signal_handler(sig)
            await self.stop()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Accept nothing new, close idle connections, and give requests in flight ``grace_s``
        to be answered (each such connection closes after its answer)."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        if self._uds is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._uds)
        deadline = self.loop.time() + grace_s
        while self._connections:
            for conn in list(self._connections):
                if conn.idle() or self.loop.time() >= deadline:
                    conn.close()
            await asyncio.sleep(0.01)
        if self._tick is not None:
            self._tick.cancel()
