"""Keeps the agent's lease in Redis ahead of need, shared by every replica of its sidecar.

The hot path never waits on the control plane: reserve and commit only read and
write Redis, and when the lease runs low a background task, under a Redis lock
so that one replica at a time does it, asks the control plane for more.
"""

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from datetime import datetime

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from iron.money import grant_micros
from iron.protocol import HandshakeResponse, ProviderInfo
from sidecar.config import SidecarSettings
from sidecar.control_plane import BudgetExhausted, ControlPlaneClient, LeaseGone, Refused, Unreachable
from sidecar.metrics import Metrics
from sidecar.scripts import ScriptClient
from sidecar.store import LeaseStore, agent_cache_key

log = logging.getLogger("iron.sidecar")

_EXHAUSTED_BACKOFF_S = 2.0
_EXTEND_WHEN_WITHIN_MS = 5 * 60_000  # heartbeat a lease that would expire this soon


class Provider(msgspec.Struct):
    """What a handshake said about the provider; the key stays sealed for the IC token."""

    ip_token: str | None
    info: ProviderInfo | None


def _ms(moment: str) -> int:
    return int(datetime.fromisoformat(moment).timestamp() * 1000)


class LeaseManager:
    def __init__(
        self,
        settings: SidecarSettings,
        redis: Redis,
        scripts: ScriptClient,
        client: ControlPlaneClient,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._scripts = scripts
        self._client = client
        self._metrics = metrics
        self._owner = f"{settings.replica_id}:{secrets.token_hex(4)}"
        self._refresh_task: asyncio.Task[None] | None = None
        self._quiet_until = 0.0  # monotonic: no refresh attempts before this
        self.store: LeaseStore | None = None
        self.lease_id: str | None = None  # the lease last seen installed, for reports
        self.control_plane_reachable = True
        self.exhausted = False
        self.remaining_micros = 0  # after the last reserve or commit; read when metrics are scraped
        metrics.lease_remaining.set_function(lambda: self.remaining_micros / 1_000_000)

    # -- start and stop ---------------------------------------------------------------------------

    async def start(self, max_backoff_s: float = 5.0) -> None:
        """Adopt the lease another replica holds, or open one; waits out a control-plane outage."""
        digest = hashlib.sha256(self._settings.ic_token.encode()).hexdigest()
        known = await self._redis.get(agent_cache_key(digest))
        if known is not None:
            self._attach(known.decode() if isinstance(known, bytes) else known)
        backoff = 0.1
        while True:
            try:
                await self._ensure_lease(digest)
                if self.store is not None and (await self.store.snapshot()).lease_id is not None:
                    break  # ours, or one another replica installed
            except Unreachable:
                self.set_reachable(False)
            except BudgetExhausted:
                if self.store is not None:  # serve refusals until an admin raises the budget
                    break
            except (RedisError, OSError) as exc:
                log.warning("Redis unavailable at start: %s", type(exc).__name__)
            log.warning("no lease yet; retrying in %.1f s", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)
        assert self.store is not None
        await self.store.heartbeat(self._settings.replica_id)
        self.lease_id = (await self.store.snapshot()).lease_id

    async def stop(self) -> None:
        """Leave; the last replica out hands the unused lease back to the control plane."""
        if self._refresh_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh_task
        if self.store is None:
            return
        lease_id = await self.store.leave(self._settings.replica_id, self._settings.member_ttl_ms)
        if lease_id is not None:
            try:
                returned = await self._client.return_lease(lease_id)
                log.info("returned lease %s (%.6f USD unused)", lease_id, returned.returned)
            except (Unreachable, Refused, LeaseGone):
                log.warning("could not return lease %s; the control plane will expire it", lease_id)

    # -- the hot path's hook ----------------------------------------------------------------------

    def after_call(self, remaining_micros: int) -> None:
        """Called with the remaining budget after each reserve or commit; never blocks."""
        self.remaining_micros = remaining_micros
        if remaining_micros < self._settings.low_water_micros:
            self.request_refresh()

    def request_refresh(self) -> None:
        if self._refresh_task is None and time.monotonic() >= self._quiet_until:
            self._refresh_task = asyncio.create_task(self._refresh())

    # -- background work --------------------------------------------------------------------------

    async def heartbeat_once(self) -> None:
        """Membership, reservation expiry, and extending or topping up the lease when due."""
        assert self.store is not None
        await self.store.heartbeat(self._settings.replica_id)
        await self.store.expire_reservations()
        snap = await self.store.snapshot()
        self.lease_id = snap.lease_id or self.lease_id
        due = snap.expires_at_ms - int(time.time() * 1000) < _EXTEND_WHEN_WITHIN_MS
        if snap.lease_id is None or due or snap.remaining_micros < self._settings.low_water_micros:
            self.request_refresh()
        if self._refresh_task is not None:
            await asyncio.shield(self._refresh_task)

    async def run_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_s)
            try:
                await self.heartbeat_once()
            except (RedisError, OSError) as exc:  # Redis away for a moment: next beat
                log.warning("heartbeat failed: %s", type(exc).__name__)

    async def _refresh(self) -> None:
        try:
            digest = hashlib.sha256(self._settings.ic_token.encode()).hexdigest()
            await self._ensure_lease(digest)
        except BudgetExhausted:
            self.exhausted = True
            self._quiet_until = time.monotonic() + _EXHAUSTED_BACKOFF_S
            self._metrics.lease_refreshes.labels("exhausted").inc()
        except Unreachable:
            self.set_reachable(False)
            self._quiet_until = time.monotonic() + 0.5
            self._metrics.lease_refreshes.labels("unreachable").inc()
        except Refused as exc:
            log.error("control plane refused the lease call (%s %s)", exc.status, exc.code)
            self._quiet_until = time.monotonic() + 5
            self._metrics.lease_refreshes.labels("refused").inc()
        except (RedisError, OSError) as exc:
            log.warning("lease refresh failed on Redis: %s", type(exc).__name__)
            self._quiet_until = time.monotonic() + 0.5
        finally:
            self._refresh_task = None

    async def _ensure_lease(self, digest: str) -> None:
        """Under the refresh lock: top up, extend, or replace the lease as the snapshot says."""
        if self.store is None:  # the very first handshake: nothing to lock on yet
            try:
                handshake = await self._client.handshake(
                    self._settings.lease_micros, self._settings.replica_id
                )
            except BudgetExhausted as exc:
                if exc.agent_id:  # no lease, but now we know whose refusals to serve
                    self._attach(exc.agent_id)
                raise
            await self._install(handshake)
            await self._redis.set(agent_cache_key(digest), handshake.agent_id)
            return
        store = self.store
        if not await store.try_refresh_lock(self._owner, self._settings.refresh_lock_ms):
            return  # another replica is at it; its result lands in the same Redis
        try:
            snap = await store.snapshot()
            now_ms = int(time.time() * 1000)
            if snap.lease_id is None or snap.expires_at_ms <= now_ms:
                await self._install(
                    await self._client.handshake(self._settings.lease_micros, self._settings.replica_id)
                )
                return
            low = snap.remaining_micros < self._settings.low_water_micros
            due = snap.expires_at_ms - now_ms < _EXTEND_WHEN_WITHIN_MS
            if not (low or due):
                return
            try:
                result = await self._client.refresh(snap.lease_id, self._settings.lease_micros if low else 0)
            except LeaseGone:
                await self._install(
                    await self._client.handshake(self._settings.lease_micros, self._settings.replica_id)
                )
                return
            await store.install_lease(
                result.lease_id, grant_micros(result.lease_granted), _ms(result.expires_at)
            )
            self.lease_id = result.lease_id
            self._granted(result.budget_granted)
        finally:
            await store.release_refresh_lock(self._owner)

    async def _install(self, handshake: HandshakeResponse) -> None:
        self._attach(handshake.agent_id)
        assert self.store is not None
        snap = await self.store.snapshot()
        if snap.lease_id not in (None, handshake.lease_id) and snap.expires_at_ms > int(time.time() * 1000):
            # another replica installed a lease meanwhile: keep one, hand ours back
            await self._client.return_lease(handshake.lease_id)
            return
        await self.store.install_lease(
            handshake.lease_id, grant_micros(handshake.lease_granted), _ms(handshake.expires_at)
        )
        await self.store.save_provider(msgspec.json.encode(Provider(handshake.ip_token, handshake.provider)))
        self.lease_id = handshake.lease_id
        self._granted(handshake.budget_granted)

    def _granted(self, amount_usd: float) -> None:
        self.set_reachable(True)
        if amount_usd > 0:
            self.exhausted = False
        self._metrics.lease_refreshes.labels("granted" if amount_usd > 0 else "extended").inc()

    def _attach(self, agent_id: str) -> None:
        if self.store is None:
            self.store = LeaseStore(
                self._redis,
                agent_id,
                hold_ms=self._settings.hold_ms,
                dedup_window_ms=self._settings.dedup_window_ms,
                scripts=self._scripts,
            )

    def set_reachable(self, up: bool) -> None:
        self.control_plane_reachable = up
        self._metrics.control_plane_up.set(1 if up else 0)

    async def provider(self) -> Provider | None:
        assert self.store is not None
        raw = await self.store.load_provider()
        return None if raw is None else msgspec.json.decode(raw, type=Provider)
