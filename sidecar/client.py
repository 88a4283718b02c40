"""The runtime SDK: what agent code calls before and after every LLM call.

Construct one client per process and keep it: it holds a single connection pool, so the two
requests per LLM call reuse a kept-alive connection instead of paying for a new one.

    async with AsyncSidecarClient() as sidecar:
        async with sidecar.spend(0.05) as call:   # raises BudgetExhausted: do not call the LLM
            reply = await llm(...)
            call.cost_usd, call.model = reply.cost, reply.model
            call.input_tokens, call.output_tokens = reply.usage.prompt, reply.usage.completion

Request and response bodies are the wire types of :mod:`sidecar.schemas`; what each call sends and
how its reply is read lives once in :mod:`sidecar.client_core`, and the two clients here only send.
"""

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Generic, ParamSpec, Self, TypeVar, overload

import httpx

from iron.protocol import UsageStatus
from sidecar import client_core as core
from sidecar.client_core import BudgetExhausted, Call, Exchange, Reservation, SidecarError

__all__ = [
    "DEFAULT_URL",
    "AsyncSidecarClient",
    "BudgetExhausted",
    "Call",
    "Reservation",
    "SidecarClient",
    "SidecarError",
]

DEFAULT_URL = "http://127.0.0.1:8081"
P = ParamSpec("P")
T = TypeVar("T")


class _Endpoint(Generic[P, T]):
    """A client method made from a core request builder: blocking on :class:`SidecarClient`, a
    coroutine on :class:`AsyncSidecarClient`, with the builder's parameters and docstring."""

    def __init__(self, build: Callable[P, Exchange[T]]) -> None:
        self._build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, client: None, owner: type) -> Self: ...
    @overload
    def __get__(self, client: "SidecarClient", owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(self, client: "AsyncSidecarClient", owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, client: "SidecarClient | AsyncSidecarClient | None", owner: type) -> Any:
        if client is None:
            return self
        build, send = self._build, client._send

        @functools.wraps(build)
        def method(*args: P.args, **kwargs: P.kwargs) -> Any:
            return send(build(*args, **kwargs))

        return method


class _Endpoints:
    """The sidecar's runtime API, declared once for both clients."""

    reserve = _Endpoint(core.reserve)
    commit = _Endpoint(core.commit)
    cancel = _Endpoint(core.cancel)
    report = _Endpoint(core.report)
    budget = _Endpoint(core.budget)
    provider = _Endpoint(core.provider)


def _http_options(base_url: str, unix_socket: str | None, timeout_s: float) -> dict[str, Any]:
    """httpx client options; over a Unix socket the host part of the URL is only a placeholder."""
    return {"base_url": "http://sidecar" if unix_socket else base_url, "timeout": timeout_s}


class AsyncSidecarClient(_Endpoints):
    """The SDK for asyncio runtimes. Safe to share between tasks."""

    def __init__(
        self, base_url: str = DEFAULT_URL, *, unix_socket: str | None = None, timeout_s: float = 5.0
    ) -> None:
        transport = httpx.AsyncHTTPTransport(uds=unix_socket) if unix_socket else None
        self._http = httpx.AsyncClient(transport=transport, **_http_options(base_url, unix_socket, timeout_s))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _send(self, exchange: Exchange[T]) -> T:
        try:
            response = await self._http.request(
                exchange.method, exchange.path, content=exchange.content(), headers=core.JSON_HEADERS
            )
        except httpx.TransportError as exc:
            raise core.unreachable(exc) from exc
        return exchange.read(response)

    @contextlib.asynccontextmanager
    async def spend(self, estimate_usd: float, request_id: str | None = None) -> AsyncIterator[Call]:
        """Reserve, let the block make the call, then commit what it set (``failed`` if it raised);
        a block that set no cost spent nothing, so its hold is cancelled."""
        call = Call(await self.reserve(estimate_usd, request_id))
        status: UsageStatus = "failed"
        try:
            yield call
            status = "completed"
        finally:
            call.outcome = await self._send(call.settle(status))


class SidecarClient(_Endpoints):
    """The SDK for threaded or synchronous runtimes. Safe to share between threads."""

    def __init__(
        self, base_url: str = DEFAULT_URL, *, unix_socket: str | None = None, timeout_s: float = 5.0
    ) -> None:
        transport = httpx.HTTPTransport(uds=unix_socket) if unix_socket else None
        self._http = httpx.Client(transport=transport, **_http_options(base_url, unix_socket, timeout_s))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _send(self, exchange: Exchange[T]) -> T:
        try:
            response = self._http.request(
                exchange.method, exchange.path, content=exchange.content(), headers=core.JSON_HEADERS
            )
        except httpx.TransportError as exc:
            raise core.unreachable(exc) from exc
        return exchange.read(response)

    @contextlib.contextmanager
    def spend(self, estimate_usd: float, request_id: str | None = None) -> Iterator[Call]:
        """See :meth:`AsyncSidecarClient.spend`."""
        call = Call(self.reserve(estimate_usd, request_id))
        status: UsageStatus = "failed"
        try:
            yield call
            status = "completed"
        finally:
            call.outcome = self._send(call.settle(status))
