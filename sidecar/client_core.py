"""The SDK's sans-I/O core: the requests each call sends and how its reply is read.

Both clients in :mod:`sidecar.client` send these exchanges, one blocking and one awaiting, so what
goes on the wire and what comes back is written once.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

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

Reservation = ReserveResponse
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

JSON_HEADERS = {"content-type": "application/json"}
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


def unreachable(exc: httpx.TransportError) -> SidecarError:
    """What a failed connection becomes: status 0, so callers catch one exception type."""
    return SidecarError(0, "SIDECAR_UNREACHABLE", f"the sidecar did not answer ({type(exc).__name__})")


@dataclass(frozen=True, slots=True)
class Exchange(Generic[T_co]):
    """One request to the sidecar and how to read its reply into what the SDK method returns."""

    method: str
    path: str
    body: msgspec.Struct | None
    read: Callable[[httpx.Response], T_co]

    def content(self) -> bytes | None:
        return None if self.body is None else _encode(self.body)


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


def _decoder(type_: type[T]) -> Callable[[httpx.Response], T]:
    return lambda response: msgspec.json.decode(_checked(response).content, type=type_)


def _outcome(response: httpx.Response) -> str:
    outcome: str = _checked(response).headers.get(OUTCOME_HEADER, "")
    return outcome


def _released(response: httpx.Response) -> bool:
    return _outcome(response) == "released"


def _no_outcome(response: httpx.Response) -> None:
    _checked(response)


def reserve(estimated_cost_usd: float, request_id: str | None = None) -> Exchange[Reservation]:
    """Hold ``estimated_cost_usd`` of the lease; raises :class:`BudgetExhausted` if it is not there."""
    request = ReserveRequest(estimated_cost_usd=estimated_cost_usd, request_id=request_id)
    return Exchange("POST", "/v1/reserve", request, _decoder(ReserveResponse))


def commit(
    reservation_id: str,
    cost_usd: float,
    input_tokens: int,
    output_tokens: int,
    model: str,
    status: UsageStatus = "completed",
    provider: str | None = None,
    latency_ms: int | None = None,
) -> Exchange[str]:
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
    return Exchange("POST", "/v1/commit", request, _outcome)


def cancel(reservation_id: str) -> Exchange[bool]:
    """Release a hold without charging; False if it was no longer held."""
    return Exchange("POST", "/v1/cancel", CancelRequest(reservation_id=reservation_id), _released)


def report(
    request_id: str,
    cost_usd: float,
    input_tokens: int,
    output_tokens: int,
    model: str,
    status: UsageStatus = "completed",
    provider: str | None = None,
    latency_ms: int | None = None,
) -> Exchange[str]:
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
    return Exchange("POST", "/v1/report", request, _outcome)


def budget() -> Exchange[BudgetView]:
    return Exchange("GET", "/v1/budget", None, _decoder(BudgetView))


def provider() -> Exchange[ProviderView]:
    """The real provider key and base URL: the runtime never needs them in its own config."""
    return Exchange("GET", "/v1/provider", None, _decoder(ProviderView))


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

    def settle(self, status: UsageStatus) -> Exchange[str | None]:
        """The end of a ``spend`` block: commit what the block set, or cancel if it set no cost."""
        reservation_id = self.reservation.reservation_id
        if self.cost_usd is None:
            return Exchange("POST", "/v1/cancel", CancelRequest(reservation_id=reservation_id), _no_outcome)
        latency_ms = int((time.monotonic() - self._started) * 1000)
        usage = (self.input_tokens, self.output_tokens, self.model, status, self.provider, latency_ms)
        return commit(reservation_id, self.cost_usd, *usage)
