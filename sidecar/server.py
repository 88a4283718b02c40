"""The sidecar's HTTP surface: a plain ASGI app, a dict from (method, path) to a handler.

The hot path is two requests per LLM call, so the layer is as thin as a
correct HTTP server allows: no framework between the socket and
:class:`~sidecar.service.RuntimeService`, bodies decoded once with msgspec.
(Litestar would work; measured in ``bench/http_stack.py``, it costs more per
request than this whole layer.)
"""

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from iron.money import usd
from iron.timefmt import iso, utcnow
from iron.validation import InvalidBody, decode
from sidecar.lease import LeaseManager
from sidecar.metrics import Metrics
from sidecar.schemas import (
    OUTCOME_HEADER,
    CancelRequest,
    CommitRequest,
    ErrorBody,
    ErrorDetail,
    ReportRequest,
    ReserveRequest,
)
from sidecar.service import BudgetRefused, NoProvider, RuntimeService

log = logging.getLogger("iron.sidecar")

T = TypeVar("T")
Headers = list[tuple[bytes, bytes]]
Reply = tuple[int, bytes, Headers]
Handler = Callable[[dict[str, Any], bytes], Awaitable[Reply]]

_MAX_BODY = 64 * 1024
_JSON = (b"content-type", b"application/json")
_LOOPBACK = {"127.0.0.1", "::1"}
_encode = msgspec.json.Encoder().encode


def _error(status: int, code: str, message: str, **extra: Any) -> Reply:
    detail = ErrorDetail(
        code=code, message=message, request_id=f"req_{uuid.uuid4()}", timestamp=iso(utcnow())
    )
    for name, value in extra.items():
        setattr(detail, name, value)
    return status, _encode(ErrorBody(detail)), [_JSON, (b"x-request-id", detail.request_id.encode())]


def _json(body: msgspec.Struct | dict[str, Any]) -> Reply:
    return 200, _encode(body), [_JSON]


class SidecarApp:
    """Request handling only; :class:`sidecar.app.Sidecar` owns start-up and shutdown."""

    def __init__(self, service: RuntimeService, lease: LeaseManager, metrics: Metrics) -> None:
        self._service = service
        self._lease = lease
        self._metrics = metrics
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/reserve"): self._reserve,
            ("POST", "/v1/commit"): self._commit,
            ("POST", "/v1/cancel"): self._cancel,
            ("POST", "/v1/report"): self._report,
            ("GET", "/v1/budget"): self._budget,
            ("GET", "/v1/provider"): self._provider,
            ("GET", "/healthz"): self._healthz,
            ("GET", "/metrics"): self._metrics_text,
        }
        self._paths = {path for _, path in self._routes}

    # -- ASGI ---------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            status, body, headers = await self._dispatch(scope, receive)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

    async def _dispatch(self, scope: dict[str, Any], receive: Any) -> Reply:
        handler = self._routes.get((scope["method"], scope["path"]))
        if handler is None:
            if scope["path"] in self._paths:
                return _error(405, "METHOD_NOT_ALLOWED", "Method not allowed on this resource")
            return _error(404, "RESOURCE_NOT_FOUND", "No such resource")
        message = await receive()
        body: bytes = message.get("body", b"")
        while message.get("more_body"):
            message = await receive()
            body += message.get("body", b"")
            if len(body) > _MAX_BODY:
                return _error(413, "REQUEST_TOO_LARGE", "Request body too large")
        try:
            return await handler(scope, body)
        except InvalidBody as exc:
            return _error(400, "VALIDATION_ERROR", exc.message, fields=exc.fields)
        except BudgetRefused as exc:
            return _error(
                402,
                "BUDGET_EXHAUSTED",
                "Not enough budget left on the lease for this call",
                details={"remaining_usd": usd(max(exc.remaining_micros, 0), 6)},
            )
        except Exception as exc:  # never a trace or a secret on the wire or in the log
            log.error("unhandled %s on %s %s", type(exc).__name__, scope["method"], scope["path"])
            return _error(503, "SERVICE_UNAVAILABLE", "The sidecar cannot serve this right now")

    # -- handlers ---------------------------------------------------------------------------------

    async def _reserve(self, scope: dict[str, Any], body: bytes) -> Reply:
        return _json(await self._service.reserve(decode(body, ReserveRequest)))

    async def _commit(self, scope: dict[str, Any], body: bytes) -> Reply:
        outcome = await self._service.commit(decode(body, CommitRequest))
        return 204, b"", [(OUTCOME_HEADER.encode(), outcome.value.encode())]

    async def _cancel(self, scope: dict[str, Any], body: bytes) -> Reply:
        released = await self._service.cancel(decode(body, CancelRequest).reservation_id)
        return 204, b"", [(OUTCOME_HEADER.encode(), b"released" if released else b"not_held")]

    async def _report(self, scope: dict[str, Any], body: bytes) -> Reply:
        outcome = await self._service.report(decode(body, ReportRequest))
        return 204, b"", [(OUTCOME_HEADER.encode(), outcome.value.encode())]

    async def _budget(self, scope: dict[str, Any], body: bytes) -> Reply:
        return _json(await self._service.budget())

    async def _provider(self, scope: dict[str, Any], body: bytes) -> Reply:
        client = scope.get("client")
        if client is not None and client[0] not in _LOOPBACK:
            return _error(403, "PERMISSION_DENIED", "The provider key is served on loopback only")
        try:
            return _json(await self._service.provider())
        except NoProvider:
            return _error(404, "RESOURCE_NOT_FOUND", "No provider is assigned to this agent")

    async def _healthz(self, scope: dict[str, Any], body: bytes) -> Reply:
        return _json({"status": "ok", "control_plane_reachable": self._lease.control_plane_reachable})

    async def _metrics_text(self, scope: dict[str, Any], body: bytes) -> Reply:
        return 200, self._metrics.render(), [(b"content-type", b"text/plain; version=0.0.4")]
