"""The hot path's transport to Redis: Lua script calls, auto-pipelined on one connection.

Reserve and commit are one ``EVALSHA`` each, and that call is most of the
sidecar's work per request. On the target machine (``python -m
bench.redis_clients``, results in ``bench/results/``), ``reserve.lua`` through
redis-py's script objects took 189 µs at the median and 7.8k calls/s from 32
coroutines; through this client 79 µs and 67k calls/s. (valkey-glide, tried
outside the project, was slower than redis-py per call.) So the scripts go
through this small client, with hiredis doing the parsing; everything off the
hot path (snapshots, locks, the journal) stays on redis-py.

Requests from concurrent coroutines are written back to back on one
connection and their replies matched in order (Redis answers in order), so
there is no pool to check out of. A request made while others are in flight
waits for the end of the event loop's pass, so that all the requests of one
pass go out in one write: under load a write system call (on loopback, most of
a request's cost) carries many requests, and an idle connection still writes
at once. A lost connection fails the calls in flight
with ``ConnectionError`` and the next call reconnects. ``NOSCRIPT`` (after a
``SCRIPT FLUSH``, a restart or a failover) loads the script and retries once.
"""

import asyncio
import collections
import hashlib
import ssl
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ResponseError

Arg = str | int | bytes


@dataclass(frozen=True, slots=True)
class LuaScript:
    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> "LuaScript":
        return cls(source, hashlib.sha1(source.encode()).hexdigest())  # noqa: S324 (Redis names scripts by SHA-1)


def _bulk(args: tuple[Arg, ...]) -> bytes:
    """RESP bulk strings, without the array header."""
    parts = []
    for arg in args:
        raw = arg if type(arg) is bytes else b"%d" % arg if type(arg) is int else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(parts)


def _pack(args: tuple[Arg, ...]) -> bytes:
    return b"*%d\r\n%b" % (len(args), _bulk(args))


class _Connection(asyncio.Protocol):
    """Replies are matched to callers in order. A watchdog, not a timer per call, bounds waiting:
    if the oldest request has waited ``timeout_s``, the connection is dropped and every caller
    in flight gets ``ConnectionError``."""

    def __init__(self, timeout_s: float) -> None:
        self._parser = hiredis.Reader()
        self._waiters: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._unsent: list[bytes] = []  # written at the end of this pass of the event loop
        self._transport: asyncio.Transport | None = None
        self._timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is duck-typed
        self._loop.call_later(self._timeout_s / 4, self._watch)

    def _watch(self) -> None:
        if self.lost:
            return
        if self._waiters and self._loop.time() - self._waiters[0][1] > self._timeout_s:
            self.close()  # connection_lost fails everyone waiting
            return
        self._loop.call_later(self._timeout_s / 4, self._watch)

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        while (reply := self._parser.gets()) is not False:
            waiter, _ = self._waiters.popleft()
            if not waiter.done():  # its caller may have been cancelled; the reply is still consumed
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self._waiters:
            waiter, _ = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("connection to Redis lost"))

    def send(self, command: bytes) -> "asyncio.Future[Any]":
        assert self._transport is not None
        waiter = self._loop.create_future()
        if self._unsent:
            self._unsent.append(command)
        elif self._waiters:  # busy: gather this pass's requests into one write
            self._unsent.append(command)
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(command)
        self._waiters.append((waiter, self._loop.time()))
        return waiter

    def _flush(self) -> None:
        if self._transport is not None and not self.lost:
            self._transport.write(b"".join(self._unsent))
        self._unsent.clear()

    def close(self) -> None:
        self.lost = True
        if self._transport is not None:
            self._transport.abort()


class ScriptClient:
    """Runs Lua scripts by SHA on one pipelined connection; connects on first use."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        timeout_s: float = 5.0,
    ) -> None:
        self._address = (host, port)
        self._setup = [_pack(("AUTH", *(a for a in (username, password) if a)))] if password else []
        if db:
            self._setup.append(_pack(("SELECT", db)))
        self._tls = ssl.create_default_context() if tls else None
        self._timeout_s = timeout_s
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "ScriptClient":
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError("only redis:// and rediss:// URLs are supported on the hot path")
        db = int(parts.path.lstrip("/") or 0)
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 6379,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "rediss",
            **kwargs,
        )

    @classmethod
    def like(cls, connection_kwargs: dict[str, Any]) -> "ScriptClient":
        """The same server and database as a redis-py client's pool."""
        return cls(
            connection_kwargs.get("host", "127.0.0.1"),
            int(connection_kwargs.get("port", 6379)),
            db=int(connection_kwargs.get("db", 0) or 0),
            username=connection_kwargs.get("username"),
            password=connection_kwargs.get("password"),
        )

    async def _connected(self) -> _Connection:
        connection = self._connection
        if connection is not None and not connection.lost:
            return connection
        async with self._connecting:
            if self._connection is None or self._connection.lost:
                loop = asyncio.get_running_loop()
                try:
                    _, fresh = await asyncio.wait_for(
                        loop.create_connection(
                            lambda: _Connection(self._timeout_s), *self._address, ssl=self._tls
                        ),
                        self._timeout_s,
                    )
                except (OSError, TimeoutError) as exc:
                    raise ConnectionError(f"cannot connect to Redis: {type(exc).__name__}") from None
                for command in self._setup:
                    reply = await fresh.send(command)
                    if isinstance(reply, hiredis.ReplyError):
                        fresh.close()
                        raise ConnectionError("Redis refused the connection setup")
                self._connection = fresh
            return self._connection

    async def _call(self, command: bytes) -> Any:
        return await (await self._connected()).send(command)

    def bind(self, script: LuaScript, keys: tuple[str, ...]) -> "BoundScript":
        """``script`` on fixed keys, for calls on the hot path: the command's start is packed once."""
        return BoundScript(self, script, keys)

    async def run(self, script: LuaScript, keys: tuple[str, ...], args: tuple[Arg, ...]) -> Any:
        """``EVALSHA``; on ``NOSCRIPT`` load the script and retry once. Errors raise ``ResponseError``."""
        return await self.bind(script, keys)(*args)

    async def evalsha(self, script: LuaScript, command: bytes) -> Any:
        """Send a packed ``EVALSHA`` of ``script``; loads the script on ``NOSCRIPT`` and retries once."""
        reply = await self._call(command)
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            await self._call(_pack(("SCRIPT", "LOAD", script.source)))
            reply = await self._call(command)
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply

    async def aclose(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class BoundScript:
    """A script on fixed keys: each call packs only its arguments."""

    __slots__ = ("_client", "_heads", "_keys", "_script")

    def __init__(self, client: ScriptClient, script: LuaScript, keys: tuple[str, ...]) -> None:
        self._client, self._script, self._keys = client, script, keys
        self._heads: dict[int, bytes] = {}  # by argument count: the array header counts them

    def _head(self, nargs: int) -> bytes:
        fixed: tuple[Arg, ...] = ("EVALSHA", self._script.sha, len(self._keys), *self._keys)
        head = self._heads[nargs] = b"*%d\r\n%b" % (len(fixed) + nargs, _bulk(fixed))
        return head

    async def __call__(self, *args: Arg) -> Any:
        head = self._heads.get(len(args)) or self._head(len(args))
        return await self._client.evalsha(self._script, head + _bulk(args))
