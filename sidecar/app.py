"""One sidecar process: its parts, and the order they start and stop in."""

import asyncio
import contextlib
import logging

import redis.asyncio as redis
from redis.exceptions import RedisError

from sidecar.config import SidecarSettings
from sidecar.control_plane import ControlPlaneClient
from sidecar.flusher import Flusher
from sidecar.lease import LeaseManager
from sidecar.metrics import Metrics
from sidecar.scripts import ScriptClient
from sidecar.server import SidecarApp
from sidecar.service import RuntimeService
from sidecar.store import JournalReader

log = logging.getLogger("iron.sidecar")


class Sidecar:
    def __init__(self, settings: SidecarSettings) -> None:
        self.settings = settings
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.scripts = ScriptClient.from_url(settings.redis_url)  # the hot path's own connection
        self.client = ControlPlaneClient(
            settings.control_plane_url, settings.ic_token, settings.control_plane_timeout_s
        )
        self.metrics = Metrics()
        self.lease = LeaseManager(settings, self.redis, self.scripts, self.client, self.metrics)
        self._flusher: Flusher | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> SidecarApp:
        """Obtain the lease (waiting out a control-plane outage), start the background work,
        and return the handler of the runtime's requests (served by :class:`sidecar.http.HttpServer`)."""
        await self.lease.start()
        store = self.lease.store
        assert store is not None
        self._flusher = Flusher(
            JournalReader(self.redis, store.keys, self.settings.replica_id),
            self.client,
            lambda: self.lease.lease_id,
            self.metrics,
            batch_size=self.settings.batch_size,
            batch_age_ms=self.settings.batch_age_ms,
            claim_idle_ms=self.settings.claim_idle_ms,
            on_reachable=self.lease.set_reachable,
        )
        self._tasks = [
            asyncio.create_task(self._flusher.run()),
            asyncio.create_task(self.lease.run_heartbeats()),
        ]
        service = RuntimeService(self.settings, self.lease, self.client, self.metrics)
        return SidecarApp(service, self.lease, self.metrics)

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Flush the journal, then hand the lease back if this is the last replica."""
        background = self._tasks[1:]
        for task in background:
            task.cancel()
        if background:  # done before the clients close: a heartbeat mid-refresh must not outlive them
            await asyncio.wait(background, timeout=drain_timeout_s)
        if self._flusher is not None:
            self._flusher.stop()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._tasks[0], drain_timeout_s)
            try:
                await asyncio.wait_for(self._flusher.drain(), drain_timeout_s)
            except TimeoutError:
                log.warning("journal not fully flushed at shutdown; it stays in Redis for the next start")
        try:
            await self.lease.stop()
        except (RedisError, OSError) as exc:  # the lease expires at the control plane instead
            log.warning("could not leave cleanly: %s", type(exc).__name__)
        await self.client.aclose()
        await self.scripts.aclose()
        await self.redis.aclose()
