"""The sidecar's runtime API: a dict from (method, path) to a handler, served by :mod:`sidecar.http`.

The hot path is two requests per LLM call, so the layer is as thin as a
correct HTTP server allows: no framework between the socket and
:class:`~sidecar.service.RuntimeService`, bodies decoded once with msgspec.
(Litestar would work; measured in ``bench/http_stack.py``, it costs more per
request than this whole layer.)
"""

import logging
import uuid
from typing import Any, Final

import msgspec

from iron.money import usd
from iron.timefmt import iso, utcnow
from iron.validation import InvalidBody, decode
from sidecar.http import Handler, Reply, Request
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
from sidecar.store import CommitOutcome

log = logging.getLogger("iron.sidecar")

_JSON: Final = b"content-type: application/json\r\n"
_encode = msgspec.json.Encoder().encode


def _outcome(value: str) -> bytes:
    return b"%s: %s\r\n" % (OUTCOME_HEADER.encode(), value.encode())


#: The commit and report outcome headers, rendered once.
_OUTCOMES: Final = {outcome: _outcome(outcome.value) for outcome in CommitOutcome}
_RELEASED: Final = {True: _outcome("released"), False: _outcome("not_held")}


def error_reply(status: int, code: str, message: str, **extra: Any) -> Reply:
    """An error in the contract's format, with a request id of its own."""
    detail = ErrorDetail(
        code=code, message=message, request_id=f"req_{uuid.uuid4()}", timestamp=iso(utcnow())
    )
    for name, value in extra.items():
        setattr(detail, name, value)
    return status, _encode(ErrorBody(detail)), b"%sx-request-id: %s\r\n" % (_JSON, detail.request_id.encode())


def _json(body: msgspec.Struct | dict[str, Any]) -> Reply:
    return 200, _encode(body), _JSON


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

    async def __call__(self, request: Request) -> Reply:
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            if request.path in self._paths:
                return error_reply(405, "METHOD_NOT_ALLOWED", "Method not allowed on this resource")
            return error_reply(404, "RESOURCE_NOT_FOUND", "No such resource")
        try:
            return await handler(request)
        except InvalidBody as exc:
            return error_reply(400, "VALIDATION_ERROR", exc.message, fields=exc.fields)
        except BudgetRefused as exc:
            return error_reply(
                402,
                "BUDGET_EXHAUSTED",
                "Not enough budget left on the lease for this call",
                details={"remaining_usd": usd(max(exc.remaining_micros, 0), 6)},
            )
        except Exception as exc:  # never a trace or a secret on the wire or in the log
            log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.path)
            return error_reply(503, "SERVICE_UNAVAILABLE", "The sidecar cannot serve this right now")

    # -- handlers ---------------------------------------------------------------------------------

    async def _reserve(self, request: Request) -> Reply:
        return _json(await self._service.reserve(decode(request.body, ReserveRequest)))

    async def _commit(self, request: Request) -> Reply:
        return 204, b"", _OUTCOMES[await self._service.commit(decode(request.body, CommitRequest))]

    async def _cancel(self, request: Request) -> Reply:
        released = await self._service.cancel(decode(request.body, CancelRequest).reservation_id)
        return 204, b"", _RELEASED[released]

    async def _report(self, request: Request) -> Reply:
        return 204, b"", _OUTCOMES[await self._service.report(decode(request.body, ReportRequest))]

    async def _budget(self, request: Request) -> Reply:
        return _json(await self._service.budget())

    async def _provider(self, request: Request) -> Reply:
        if not request.local_peer:
            return error_reply(403, "PERMISSION_DENIED", "The provider key is served on loopback only")
        try:
            return _json(await self._service.provider())
        except NoProvider:
            return error_reply(404, "RESOURCE_NOT_FOUND", "No provider is assigned to this agent")

    async def _healthz(self, request: Request) -> Reply:
        return _json({"status": "ok", "control_plane_reachable": self._lease.control_plane_reachable})

    async def _metrics_text(self, request: Request) -> Reply:
        return 200, self._metrics.render(), b"content-type: text/plain; version=0.0.4\r\n"
