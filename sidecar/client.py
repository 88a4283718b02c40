"""The runtime SDK: what agent code calls before and after every LLM call.

Construct one client per process and keep it: it holds a single connection pool, so the two
requests per LLM call reuse a kept-alive connection instead of paying for a new one.

    async with AsyncSidecarClient() as sidecar:
        async with sidecar.spend(0.05) as call:   # raises BudgetExhausted: do not call the LLM
            reply = await llm(...)
            call.cost_usd, call.model = reply.cost, reply.model
            call.input_tokens, call.output_tokens = reply.usage.prompt, reply.usage.completion

Request and response bodies are the wire types of :mod:`sidecar.schemas`.
"""

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self, TypeVar

import httpx
import msgspec

from iron.protocol import UsageStatus
from sidecar.schemas import (
    OUTCOME_HEADER,
    BudgetView,
    CancelRequest,
    CommitRequest,
    ErrorBody,
    ProviderView,
    ReportRequest,
    ReserveRequest,
    ReserveResponse,
)

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
Reservation = ReserveResponse
T = TypeVar("T")

_JSON = {"content-type": "application/json"}
_encode = msgspec.json.Encoder().encode


class SidecarError(Exception):
    """The sidecar refused or failed a call; ``code`` is the error code of its JSON body.

    ``status`` is 0 when the sidecar could not be reached at all.
    """

    def __init__(self, status: int, code: str, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}


class BudgetExhausted(SidecarError):
    """Not enough budget for this call: the runtime must not make it."""

    def __init__(self, message: str, remaining_usd: float) -> None:
        super().__init__(402, "BUDGET_EXHAUSTED", message)
        self.remaining_usd = remaining_usd


@dataclass
class Call:
    """One reserved LLM call; the caller fills in what it used before the ``spend`` block ends."""

    reservation: Reservation
    cost_usd: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    model: str = "unknown"
    provider: str | None = None
    #: How the commit was charged (``charged``, ``duplicate``, ...); None if it was cancelled.
    outcome: str | None = None
    _started: float = field(default_factory=time.monotonic, init=False, repr=False)

    def _commit(self, status: UsageStatus) -> CommitRequest:
        assert self.cost_usd is not None
        return CommitRequest(
            reservation_id=self.reservation.reservation_id,
            cost_usd=self.cost_usd,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            model=self.model,
            status=status,
            provider=self.provider,
            latency_ms=int((time.monotonic() - self._started) * 1000),
        )


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code < 400:
        return response
    try:
        error = msgspec.json.decode(response.content, type=ErrorBody).error
    except msgspec.DecodeError:  # not the sidecar's error format (a proxy, a wrong port, ...)
        raise SidecarError(response.status_code, "HTTP_ERROR", response.reason_phrase) from None
    if error.code == "BUDGET_EXHAUSTED":
        raise BudgetExhausted(error.message, (error.details or {}).get("remaining_usd", 0.0))
    raise SidecarError(response.status_code, error.code, error.message, error.fields)


def _decoded(response: httpx.Response, type_: type[T]) -> T:
    return msgspec.json.decode(_checked(response).content, type=type_)


def _outcome(response: httpx.Response) -> str:
    outcome: str = _checked(response).headers.get(OUTCOME_HEADER, "")
    return outcome


def _unreachable(exc: httpx.TransportError) -> SidecarError:
    return SidecarError(0, "SIDECAR_UNREACHABLE", f"the sidecar did not answer ({type(exc).__name__})")


class AsyncSidecarClient:
    """The SDK for asyncio runtimes. Safe to share between tasks."""

    def __init__(
        self, base_url: str = DEFAULT_URL, *, unix_socket: str | None = None, timeout_s: float = 5.0
    ) -> None:
        transport = httpx.AsyncHTTPTransport(uds=unix_socket) if unix_socket else None
        self._http = httpx.AsyncClient(
            base_url="http://sidecar" if unix_socket else base_url, transport=transport, timeout=timeout_s
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, body: msgspec.Struct | None = None) -> httpx.Response:
        content = None if body is None else _encode(body)
        try:
            return await self._http.request(method, path, content=content, headers=_JSON)
        except httpx.TransportError as exc:
            raise _unreachable(exc) from exc

    async def reserve(self, estimated_cost_usd: float, request_id: str | None = None) -> Reservation:
        """Hold ``estimated_cost_usd`` of the lease; raises :class:`BudgetExhausted` if it is not there."""
        request = ReserveRequest(estimated_cost_usd=estimated_cost_usd, request_id=request_id)
        return _decoded(await self._send("POST", "/v1/reserve", request), ReserveResponse)

    async def commit(
        self,
        reservation_id: str,
        cost_usd: float,
        input_tokens: int,
        output_tokens: int,
        model: str,
        status: UsageStatus = "completed",
        provider: str | None = None,
        latency_ms: int | None = None,
    ) -> str:
        """Charge the actual cost (even above the estimate) and release the hold; idempotent."""
        request = CommitRequest(
            reservation_id=reservation_id,
            cost_usd=cost_usd,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=model,
            status=status,
            provider=provider,
            latency_ms=latency_ms,
        )
        return _outcome(await self._send("POST", "/v1/commit", request))

    async def cancel(self, reservation_id: str) -> bool:
        """Release a hold without charging; False if it was no longer held."""
        response = await self._send("POST", "/v1/cancel", CancelRequest(reservation_id=reservation_id))
        return _outcome(response) == "released"

    async def report(
        self,
        request_id: str,
        cost_usd: float,
        input_tokens: int,
        output_tokens: int,
        model: str,
        status: UsageStatus = "completed",
        provider: str | None = None,
        latency_ms: int | None = None,
    ) -> str:
        """Charge a call made without a reservation; idempotent by ``request_id``."""
        request = ReportRequest(
            request_id=request_id,
            cost_usd=cost_usd,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=model,
            status=status,
            provider=provider,
            latency_ms=latency_ms,
        )
        return _outcome(await self._send("POST", "/v1/report", request))

    async def budget(self) -> BudgetView:
        return _decoded(await self._send("GET", "/v1/budget"), BudgetView)

    async def provider(self) -> ProviderView:
        """The real provider key and base URL: the runtime never needs them in its own config."""
        return _decoded(await self._send("GET", "/v1/provider"), ProviderView)

    @contextlib.asynccontextmanager
    async def spend(self, estimate_usd: float, request_id: str | None = None) -> AsyncIterator[Call]:
        """Reserve, let the block make the call, then commit what it set (``failed`` if it raised);
        a block that set no cost spent nothing, so its hold is cancelled."""
        call = Call(await self.reserve(estimate_usd, request_id))
        try:
            yield call
        except BaseException:
            await self._settle(call, "failed")
            raise
        await self._settle(call, "completed")

    async def _settle(self, call: Call, status: UsageStatus) -> None:
        if call.cost_usd is None:
            await self.cancel(call.reservation.reservation_id)
        else:
            call.outcome = _outcome(await self._send("POST", "/v1/commit", call._commit(status)))


class SidecarClient:
    """The SDK for threaded or synchronous runtimes. Safe to share between threads."""

    def __init__(
        self, base_url: str = DEFAULT_URL, *, unix_socket: str | None = None, timeout_s: float = 5.0
    ) -> None:
        transport = httpx.HTTPTransport(uds=unix_socket) if unix_socket else None
        self._http = httpx.Client(
            base_url="http://sidecar" if unix_socket else base_url, transport=transport, timeout=timeout_s
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _send(self, method: str, path: str, body: msgspec.Struct | None = None) -> httpx.Response:
        content = None if body is None else _encode(body)
        try:
            return self._http.request(method, path, content=content, headers=_JSON)
        except httpx.TransportError as exc:
            raise _unreachable(exc) from exc

    def reserve(self, estimated_cost_usd: float, request_id: str | None = None) -> Reservation:
        """Hold ``estimated_cost_usd`` of the lease; raises :class:`BudgetExhausted` if it is not there."""
        request = ReserveRequest(estimated_cost_usd=estimated_cost_usd, request_id=request_id)
        return _decoded(self._send("POST", "/v1/reserve", request), ReserveResponse)

    def commit(
        self,
        reservation_id: str,
        cost_usd: float,
        input_tokens: int,
        output_tokens: int,
        model: str,
        status: UsageStatus = "completed",
        provider: str | None = None,
        latency_ms: int | None = None,
    ) -> str:
        """Charge the actual cost (even above the estimate) and release the hold; idempotent."""
        request = CommitRequest(
            reservation_id=reservation_id,
            cost_usd=cost_usd,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=model,
            status=status,
            provider=provider,
            latency_ms=latency_ms,
        )
        return _outcome(self._send("POST", "/v1/commit", request))

    def cancel(self, reservation_id: str) -> bool:
        """Release a hold without charging; False if it was no longer held."""
        response = self._send("POST", "/v1/cancel", CancelRequest(reservation_id=reservation_id))
        return _outcome(response) == "released"

    def report(
        self,
        request_id: str,
        cost_usd: float,
        input_tokens: int,
        output_tokens: int,
        model: str,
        status: UsageStatus = "completed",
        provider: str | None = None,
        latency_ms: int | None = None,
    ) -> str:
        """Charge a call made without a reservation; idempotent by ``request_id``."""
        request = ReportRequest(
            request_id=request_id,
            cost_usd=cost_usd,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=model,
            status=status,
            provider=provider,
            latency_ms=latency_ms,
        )
        return _outcome(self._send("POST", "/v1/report", request))

    def budget(self) -> BudgetView:
        return _decoded(self._send("GET", "/v1/budget"), BudgetView)

    def provider(self) -> ProviderView:
        """The real provider key and base URL: the runtime never needs them in its own config."""
        return _decoded(self._send("GET", "/v1/provider"), ProviderView)

    @contextlib.contextmanager
    def spend(self, estimate_usd: float, request_id: str | None = None) -> Iterator[Call]:
        """Reserve, let the block make the call, then commit what it set (``failed`` if it raised);
        a block that set no cost spent nothing, so its hold is cancelled."""
        call = Call(self.reserve(estimate_usd, request_id))
        try:
            yield call
        except BaseException:
            self._settle(call, "failed")
            raise
        self._settle(call, "completed")

    def _settle(self, call: Call, status: UsageStatus) -> None:
        if call.cost_usd is None:
            self.cancel(call.reservation.reservation_id)
        else:
            call.outcome = _outcome(self._send("POST", "/v1/commit", call._commit(status)))
