"""The sidecar's client of the control plane's budget protocol.

Failures come back as a few typed exceptions, so the lease manager and the
flusher decide what to do without looking at HTTP.
"""

from typing import TypeVar

import httpx
import msgspec

from iron.money import usd
from iron.protocol import (
    BatchReportResponse,
    HandshakeRequest,
    HandshakeResponse,
    RefreshRequest,
    RefreshResponse,
    ReturnRequest,
    ReturnResponse,
)

T = TypeVar("T")


class Unreachable(Exception):
    """No answer, or a 5xx: try again later; nothing is lost."""


class BudgetExhausted(Exception):
    """403: the agent has no budget left to grant."""

    def __init__(self, agent_id: str | None = None) -> None:
        super().__init__("budget exhausted")
        self.agent_id = agent_id


class LeaseGone(Exception):
    """404/409 on a lease: it was closed or expired; open a new one."""


class Refused(Exception):
    """Any other 4xx, such as a revoked IC token: retrying the same call will not help."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"control plane refused the call: {status} {code}")
        self.status = status
        self.code = code


class _ErrorDetails(msgspec.Struct):
    agent_id: str | None = None


class _Error(msgspec.Struct):
    code: str = ""
    details: _ErrorDetails = msgspec.field(default_factory=_ErrorDetails)


class _ErrorBody(msgspec.Struct):
    error: _Error = msgspec.field(default_factory=_Error)


class _EncodedBatch(msgspec.Struct):
    """An :class:`~iron.protocol.UsageBatch` whose reports are JSON already (as journaled)."""

    lease_id: str
    reports: list[msgspec.Raw]


class ControlPlaneClient:
    def __init__(self, base_url: str, ic_token: str, timeout_s: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {ic_token}", "Content-Type": "application/json"},
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, path: str, body: msgspec.Struct, reply: type[T] | None) -> T | None:
        try:
            response = await self._http.post(path, content=msgspec.json.encode(body))
        except httpx.HTTPError as exc:
            raise Unreachable(type(exc).__name__) from None
        status = response.status_code
        if status >= 500:
            raise Unreachable(f"HTTP {status}")
        if status >= 400:
            try:
                error = msgspec.json.decode(response.content, type=_ErrorBody).error
            except msgspec.MsgspecError:
                error = _Error()
            code = error.code
            if status == 403 and code == "BUDGET_EXHAUSTED":
                raise BudgetExhausted(error.details.agent_id)
            if status in (404, 409) and path != "/api/v1/budget/handshake":
                raise LeaseGone(code)
            raise Refused(status, code)
        return None if reply is None else msgspec.json.decode(response.content, type=reply)

    async def handshake(self, requested_micros: int, runtime_id: str) -> HandshakeResponse:
        body = HandshakeRequest(requested_budget=usd(requested_micros, 6), runtime_id=runtime_id)
        result = await self._call("/api/v1/budget/handshake", body, HandshakeResponse)
        assert result is not None
        return result

    async def refresh(self, lease_id: str, requested_micros: int) -> RefreshResponse:
        body = RefreshRequest(lease_id=lease_id, requested_budget=usd(requested_micros, 6))
        result = await self._call("/api/v1/budget/refresh", body, RefreshResponse)
        assert result is not None
        return result

    async def report(self, lease_id: str, usages: list[bytes]) -> BatchReportResponse:
        """Report usage records (:func:`sidecar.store.usage_record`) as one batch."""
        batch = _EncodedBatch(lease_id, [msgspec.Raw(u) for u in usages])
        result = await self._call("/api/v1/budget/report", batch, BatchReportResponse)
        assert result is not None
        return result

    async def return_lease(self, lease_id: str) -> ReturnResponse:
        result = await self._call("/api/v1/budget/return", ReturnRequest(lease_id=lease_id), ReturnResponse)
        assert result is not None
        return result
