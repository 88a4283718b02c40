"""Ships the agent's usage journal to the control plane in batches.

An entry leaves Redis only after the control plane has taken it, so a crash,
a control-plane outage or a Redis restart (with AOF) loses nothing; a batch
sent twice is harmless because the control plane deduplicates by event id.
"""

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from sidecar.control_plane import ControlPlaneClient, LeaseGone, Refused, Unreachable
from sidecar.metrics import Metrics
from sidecar.store import JournalEntry, JournalReader

log = logging.getLogger("iron.sidecar")

_MAX_BATCH = 1000  # what one report to the control plane may carry
_CLAIM_EVERY_S = 5.0
_WAIT_SLICE_MS = 200
_FILL_POLL_MS = 25  # how often a filling batch is looked at (for being full) before its age is up


def _age_ms(entry: JournalEntry, now_ms: int) -> int:
    return now_ms - int(entry.stream_id.partition("-")[0])


class Flusher:
    def __init__(
        self,
        reader: JournalReader,
        client: ControlPlaneClient,
        current_lease: Callable[[], str | None],
        metrics: Metrics,
        *,
        batch_size: int,
        batch_age_ms: int,
        claim_idle_ms: int,
        on_reachable: Callable[[bool], None],
    ) -> None:
        self._reader = reader
        self._client = client
        self._current_lease = current_lease
        self._metrics = metrics
        self._batch_size = min(batch_size, _MAX_BATCH)
        self._batch_age_ms = batch_age_ms
        self._claim_idle_ms = claim_idle_ms
        self._on_reachable = on_reachable
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Until :meth:`stop`: recover own unacknowledged entries, then ship new ones as they come.

        Redis going away (a restart) pauses the loop; it resumes where the stream says.
        """
        recovered = False
        last_claim = 0.0
        while not self._stopping.is_set():
            try:
                if not recovered:
                    await self._reader.ensure_group()
                    await self._ship_all(lambda: self._reader.read_own_pending(_MAX_BATCH))
                    recovered = True
                if time.monotonic() - last_claim >= _CLAIM_EVERY_S:
                    last_claim = time.monotonic()
                    await self._ship_all(
                        lambda: self._reader.claim_abandoned(self._claim_idle_ms, _MAX_BATCH)
                    )
                batch = await self._collect()
                if batch:
                    await self._ship(batch)
                self._metrics.journal_depth.set(await self._reader.depth())
            except (RedisError, OSError) as exc:
                log.warning("journal read failed (%s); retrying", type(exc).__name__)
                recovered = False  # re-read own pending: a batch may have been cut short
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        self._stopping.set()

    async def drain(self) -> None:
        """Ship everything in the journal; for shutdown, after :meth:`run` has returned.

        Waits while the control plane is away: bound it with a timeout. What is left stays in
        Redis for another replica, or for this one's next start.
        """
        await self._ship_all(lambda: self._reader.read_own_pending(_MAX_BATCH))
        await self._ship_all(lambda: self._reader.read_new(_MAX_BATCH, None))

    async def _collect(self) -> list[JournalEntry]:
        """Up to ``batch_size`` entries, waiting at most ``batch_age_ms`` past the oldest.

        Blocks for the first entry only; then lets the batch fill, reading what has come every
        ``_FILL_POLL_MS``, rather than blocking again for each next entry: at a steady trickle
        that was one Redis read (and a wake-up of the sidecar and of Redis) per LLM call, on the
        cores the hot path needs. The first wait is in slices of at most ``_WAIT_SLICE_MS`` so
        that :meth:`stop` is noticed promptly rather than by cancelling a blocked Redis read.
        """
        batch = await self._reader.read_new(self._batch_size, min(self._batch_age_ms, _WAIT_SLICE_MS))
        while batch and len(batch) < self._batch_size and not self._stopping.is_set():
            wait_ms = self._batch_age_ms - _age_ms(batch[0], int(time.time() * 1000))
            if wait_ms <= 0:
                break
            await asyncio.sleep(min(wait_ms, _FILL_POLL_MS) / 1000)
            batch += await self._reader.read_new(self._batch_size - len(batch), None)
        return batch

    async def _ship_all(self, read: Callable[[], Awaitable[list[JournalEntry]]]) -> None:
        while entries := await read():
            await self._ship(entries)

    async def _ship(self, entries: list[JournalEntry]) -> None:
        """Send until the control plane has taken every entry; back off while it is away."""
        backoff = 0.05
        while True:
            try:
                await self._send(entries)
                self._on_reachable(True)
                return
            except Unreachable:
                self._on_reachable(False)
            except (Refused, LeaseGone) as exc:  # never drop usage: keep it and say so loudly
                log.error("control plane refused a usage batch (%s); keeping it", exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _send(self, entries: list[JournalEntry]) -> None:
        started = time.perf_counter()
        fallback = self._current_lease()
        for lease_id, group in itertools.groupby(entries, key=lambda e: e.lease_id or fallback):
            events = list(group)
            if lease_id is None:
                raise Unreachable("no lease to report against yet")
            await self._client.report(lease_id, [e.usage for e in events])
            await self._reader.ack([e.stream_id for e in events])
            self._metrics.flushed.inc(len(events))
        self._metrics.flush_seconds.observe(time.perf_counter() - started)
