"""The runtime's four operations and two reads, independent of HTTP.

Every state change is one Lua call on Redis; the control plane is only ever
contacted in the background (or, in ``per_request`` reporting, on commit, as
the slower mode to compare against).
"""

import contextlib
import time
import uuid

from iron.crypto import decrypt_ip_token
from iron.money import charge_micros, usd
from sidecar.config import SidecarSettings
from sidecar.control_plane import ControlPlaneClient, LeaseGone, Refused, Unreachable
from sidecar.lease import LeaseManager
from sidecar.metrics import Metrics
from sidecar.schemas import (
    BudgetView,
    CommitRequest,
    ProviderView,
    ReportRequest,
    ReserveRequest,
    ReserveResponse,
)
from sidecar.store import CommitOutcome, LeaseStore, ReserveOutcome, UsageEvent, usage_record


class BudgetRefused(Exception):
    """Not enough budget on the lease for this estimate: the runtime must not make the call."""

    def __init__(self, remaining_micros: int, reason: ReserveOutcome) -> None:
        super().__init__("budget exhausted")
        self.remaining_micros = remaining_micros
        self.reason = reason


class NoProvider(Exception):
    pass


class RuntimeService:
    def __init__(
        self,
        settings: SidecarSettings,
        lease: LeaseManager,
        client: ControlPlaneClient,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._lease = lease
        self._client = client
        self._metrics = metrics
        self._per_request = settings.reporting == "per_request"
        self._default_provider = "unknown"

    @property
    def _store(self) -> LeaseStore:
        store = self._lease.store
        assert store is not None, "the lease manager has not started"
        return store

    async def reserve(self, request: ReserveRequest) -> ReserveResponse:
        reservation_id = request.request_id or f"res_{uuid.uuid4().hex}"
        outcome, remaining = await self._store.reserve(
            reservation_id, charge_micros(request.estimated_cost_usd)
        )
        self._metrics.reserved[outcome].inc()
        if outcome is not ReserveOutcome.ADMITTED:
            self._lease.request_refresh()
            raise BudgetRefused(remaining, outcome)
        self._lease.after_call(remaining)
        return ReserveResponse(reservation_id=reservation_id, remaining_usd=usd(remaining, 6))

    async def commit(self, request: CommitRequest) -> CommitOutcome:
        event = self._event(request.cost_usd, request, request.latency_ms)
        outcome, remaining = await self._store.commit(request.reservation_id, event)
        return await self._charged(request.reservation_id, event, outcome, remaining)

    async def report(self, request: ReportRequest) -> CommitOutcome:
        event = self._event(request.cost_usd, request, request.latency_ms)
        outcome, remaining = await self._store.report(request.request_id, event)
        return await self._charged(request.request_id, event, outcome, remaining)

    async def cancel(self, reservation_id: str) -> bool:
        return await self._store.cancel(reservation_id)

    def _event(
        self, cost_usd: float, request: CommitRequest | ReportRequest, latency_ms: int | None
    ) -> UsageEvent:
        return UsageEvent(
            cost_micros=charge_micros(cost_usd),
            input_tokens=request.input_tokens,
            output_tokens=request.output_tokens,
            model=request.model,
            provider=request.provider or self._default_provider,
            status=request.status,
            ts_ms=int(time.time() * 1000),
            latency_ms=latency_ms,
        )

    async def _charged(
        self, event_id: str, event: UsageEvent, outcome: CommitOutcome, remaining: int
    ) -> CommitOutcome:
        self._metrics.committed[outcome].inc()
        self._lease.after_call(remaining)
        if self._per_request and outcome is not CommitOutcome.DUPLICATE and self._lease.lease_id:
            # the pilot's way, kept to compare against: wait for the control plane on every call
            # (the journal still ships the same event later; the control plane counts it once)
            with contextlib.suppress(Unreachable, Refused, LeaseGone):  # the journal has it
                await self._client.report(self._lease.lease_id, [usage_record(event_id, event)])
        return outcome

    async def budget(self) -> BudgetView:
        snap = await self._store.snapshot()
        return BudgetView(
            agent_id=self._store.agent_id,
            lease_id=snap.lease_id,
            granted_usd=usd(snap.granted_micros, 6),
            spent_usd=usd(snap.spent_micros, 6),
            reserved_usd=usd(snap.reserved_micros, 6),
            remaining_usd=usd(snap.remaining_micros, 6),
            expires_at_ms=snap.expires_at_ms,
            live_reservations=snap.live_reservations,
            pending_journal=snap.journal_length,
            control_plane_reachable=self._lease.control_plane_reachable,
            budget_exhausted=self._lease.exhausted,
        )

    async def provider(self) -> ProviderView:
        provider = await self._lease.provider()
        if provider is None or provider.ip_token is None or provider.info is None:
            raise NoProvider
        return ProviderView(
            provider=provider.info.type,
            provider_id=provider.info.id,
            api_key=decrypt_ip_token(self._settings.ic_token, provider.ip_token),
            base_url=provider.info.base_url,
        )
