"""The sidecar's lease state in Redis, behind one small typed interface.

Every replica of the sidecar and every runtime process of one agent share a single lease, so each
state change is one Lua script from the repo's ``lua/`` folder: atomic without locks or WATCH
retries, and one round trip on the hot path. Service logic sees only :class:`LeaseStore` and
plain values; nothing outside this module knows about keys, scripts or reply shapes.

All keys of an agent share the hash tag ``{agent_id}``, so the scripts also run on Redis Cluster.
Money is integer microdollars throughout.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, cast

import msgspec
from redis.exceptions import ResponseError

from iron.money import usd
from iron.protocol import Usage
from sidecar.scripts import BoundScript, LuaScript, ScriptClient

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "DEFAULT_DEDUP_WINDOW_MS",
    "CommitOutcome",
    "CommitResult",
    "JournalEntry",
    "JournalReader",
    "LeaseSnapshot",
    "LeaseStore",
    "ReserveOutcome",
    "ReserveResult",
    "StoreKeys",
    "UsageEvent",
    "UsageStatus",
    "usage_record",
]

#: Holds released by one expire call when none is given; reserve.lua releases up to 32 itself.
DEFAULT_EXPIRE_LIMIT: Final = 256

#: How long a charged id is remembered, so that a replay within it charges nothing.
DEFAULT_DEDUP_WINDOW_MS: Final = 3_600_000


#: The repo's ``lua/`` folder: one definition of each script, shared by every sidecar.
LUA_DIR = Path(__file__).resolve().parent.parent / "lua"


@cache
def _lua(name: str) -> str:
    """Script text, read once per process: stores of many agents share it."""
    return (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")


_encode = msgspec.json.Encoder().encode


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# Read once per process; a script is called by its SHA-1 and loaded on NOSCRIPT.
_LUA_RESERVE = LuaScript.of(_lua("reserve"))
_LUA_COMMIT = LuaScript.of(_lua("commit"))
_LUA_CANCEL = LuaScript.of(_lua("cancel"))
_LUA_REPORT = LuaScript.of(_lua("report"))
_LUA_EXPIRE = LuaScript.of(_lua("expire_reservations"))
_LUA_INSTALL = LuaScript.of(_lua("install_lease"))
_LUA_UNLOCK = LuaScript.of(_lua("unlock"))
_LUA_LEAVE = LuaScript.of(_lua("leave"))


class ReserveOutcome(enum.Enum):
    ADMITTED = "admitted"
    #: Not enough budget left on the lease for the estimate.
    REFUSED = "refused"
    #: No lease installed yet: ask the control plane for one.
    NO_LEASE = "no_lease"
    #: The lease's ``expires_at`` has passed: renew it (same id, later expiry) or install a new one.
    LEASE_EXPIRED = "lease_expired"


class CommitOutcome(enum.Enum):
    CHARGED = "charged"
    #: Charged in full though no hold was live (unknown id or expired); flagged in the journal.
    CHARGED_UNKNOWN_RESERVATION = "charged_unknown_reservation"
    #: Already charged within the dedup window: charged and journaled zero times now.
    DUPLICATE = "duplicate"


class ReserveResult(NamedTuple):
    outcome: ReserveOutcome
    #: granted - spent - reserved after the call (may be negative after over-budget usage).
    remaining_micros: int


class CommitResult(NamedTuple):
    outcome: CommitOutcome
    #: granted - spent - reserved after the call (may be negative: usage is never dropped).
    remaining_micros: int


# Lua reply codes -> outcomes; indexing a dict is the whole reply parse.
_RESERVE: Final = {
    1: ReserveOutcome.ADMITTED,
    0: ReserveOutcome.REFUSED,
    -1: ReserveOutcome.NO_LEASE,
    -2: ReserveOutcome.LEASE_EXPIRED,
}
_COMMIT: Final = {
    1: CommitOutcome.CHARGED,
    2: CommitOutcome.CHARGED_UNKNOWN_RESERVATION,
    0: CommitOutcome.DUPLICATE,
}

UsageStatus = Literal["completed", "failed"]
_STATUSES: Final = frozenset(("completed", "failed"))


class UsageEvent(NamedTuple):
    """What one LLM call used. The idempotency id is the commit/report argument, not a field,
    so there is exactly one place it can come from. (A tuple: made on every commit, and a
    frozen dataclass costs several times as much to build.)"""

    cost_micros: int
    input_tokens: int
    output_tokens: int
    model: str
    provider: str
    status: UsageStatus
    #: When the call finished (ms epoch): the usage record's timestamp.
    ts_ms: int
    latency_ms: int | None = None


@dataclass(frozen=True, slots=True)
class LeaseSnapshot:
    lease_id: str | None
    granted_micros: int
    spent_micros: int
    reserved_micros: int
    remaining_micros: int
    expires_at_ms: int
    journal_length: int
    live_reservations: int


@dataclass(frozen=True, slots=True)
class StoreKeys:
    """Key names of one agent; the journal key is what a flusher reads."""

    lease: str
    res: str
    res_exp: str
    seen: str
    journal: str
    members: str
    provider: str
    refresh_lock: str

    @classmethod
    def for_agent(cls, agent_id: str) -> StoreKeys:
        if not agent_id or "{" in agent_id or "}" in agent_id:
            raise ValueError("agent id must be non-empty and free of '{' and '}' (hash tag)")
        p = f"iron:{{{agent_id}}}:"
        names = ("lease", "res", "res_exp", "seen", "journal", "members", "provider", "refresh_lock")
        return cls(*(p + name for name in names))


def _micros(value: int, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} must be a non-negative int of microdollars, got {value!r}")
    return value


def _int(raw: bytes | str | None) -> int:
    return 0 if raw is None else int(raw)


class LeaseStore:
    """One agent's lease in Redis: reserve / commit / cancel / report / expire / install.

    Safe to share between tasks and to run in any number of processes against the same Redis:
    every mutation is a single script. Works with ``decode_responses`` on or off.
    """

    __slots__ = (
        "_cancel",
        "_commit",
        "_dedup_window_ms",
        "_expire",
        "_hold_ms",
        "_install",
        "_redis",
        "_report",
        "_reserve",
        "_scripts",
        "agent_id",
        "keys",
    )

    def __init__(
        self,
        redis: Redis,
        agent_id: str,
        *,
        hold_ms: int = 60_000,
        dedup_window_ms: int = DEFAULT_DEDUP_WINDOW_MS,
        scripts: ScriptClient | None = None,
    ) -> None:
        """``scripts`` carries the hot path's Lua calls; by default a client of the same server."""
        if hold_ms <= 0 or dedup_window_ms <= 0:
            raise ValueError("hold_ms and dedup_window_ms must be positive")
        self._redis = redis
        self._scripts = scripts or ScriptClient.like(redis.connection_pool.connection_kwargs)
        self._hold_ms = hold_ms
        self._dedup_window_ms = dedup_window_ms
        self.agent_id = agent_id
        self.keys = k = StoreKeys.for_agent(agent_id)
        # Each script's command start (name, keys) packed once; each call only adds its ARGV.
        bind = self._scripts.bind
        self._install = bind(_LUA_INSTALL, (k.lease,))
        self._reserve = bind(_LUA_RESERVE, (k.lease, k.res, k.res_exp))
        self._cancel = bind(_LUA_CANCEL, (k.lease, k.res, k.res_exp))
        self._expire = bind(_LUA_EXPIRE, (k.lease, k.res, k.res_exp))
        self._commit = bind(_LUA_COMMIT, (k.lease, k.res, k.res_exp, k.seen, k.journal))
        self._report = bind(_LUA_REPORT, (k.lease, k.seen, k.journal))

    async def install_lease(self, lease_id: str, granted_total_micros: int, expires_at_ms: int) -> int:
        """Install a lease or apply a top-up; returns remaining micros.

        ``granted_total_micros`` is the lease's total grant so far, not an increment: a replayed
        or reordered top-up then cannot grant twice. A different lease id restarts ``spent`` at 0
        and keeps live reservations.
        """
        if not lease_id:
            raise ValueError("lease id must be non-empty")
        _micros(granted_total_micros, "granted_total_micros")
        remaining: int = await self._install(lease_id, granted_total_micros, expires_at_ms)
        return remaining

    async def reserve(
        self,
        reservation_id: str,
        estimate_micros: int,
        now_ms: int | None = None,
        *,
        hold_ms: int | None = None,
    ) -> ReserveResult:
        """Hold ``estimate_micros`` until commit/cancel or ``hold_ms`` passes.

        Admits only if ``granted - spent - reserved >= estimate``; a repeated id returns ADMITTED
        without holding twice. Releases up to 32 expired holds first.
        """
        _micros(estimate_micros, "estimate_micros")
        now = _now_ms() if now_ms is None else now_ms
        deadline = now + (self._hold_ms if hold_ms is None else hold_ms)
        code, remaining = await self._reserve(reservation_id, estimate_micros, now, deadline)
        return ReserveResult(_RESERVE[code], remaining)

    async def commit(self, reservation_id: str, usage: UsageEvent, now_ms: int | None = None) -> CommitResult:
        """Charge the actual cost, release the hold and journal the event, atomically.

        Charged in full even above the estimate or without a live hold (flagged as unknown
        reservation); a replay of the same id within the dedup window charges nothing.
        """
        return await self._charge(self._commit, reservation_id, usage, now_ms)

    async def report(self, request_id: str, usage: UsageEvent, now_ms: int | None = None) -> CommitResult:
        """Charge and journal usage that had no reservation; idempotent by ``request_id``."""
        return await self._charge(self._report, request_id, usage, now_ms)

    async def _charge(
        self, script: BoundScript, event_id: str, u: UsageEvent, now_ms: int | None
    ) -> CommitResult:
        _micros(u.cost_micros, "cost_micros")
        if u.status not in _STATUSES:
            raise ValueError(f"status must be 'completed' or 'failed', got {u.status!r}")
        now = _now_ms() if now_ms is None else now_ms
        record = usage_record(event_id, u)
        code, remaining = await script(event_id, u.cost_micros, now, now - self._dedup_window_ms, record)
        return CommitResult(_COMMIT[code], remaining)

    async def cancel(self, reservation_id: str) -> bool:
        """Release a hold without charging; False if none was live (so a retry is harmless)."""
        return bool(await self._cancel(reservation_id))

    async def expire_reservations(self, now_ms: int | None = None, limit: int = DEFAULT_EXPIRE_LIMIT) -> int:
        """Release at most ``limit`` holds whose deadline passed; returns how many.

        Reserve already does this for up to 32 holds per call; this is for idle periods.
        """
        if limit <= 0:
            raise ValueError("limit must be positive")
        released: int = await self._expire(_now_ms() if now_ms is None else now_ms, limit)
        return released

    async def snapshot(self) -> LeaseSnapshot:
        """A consistent read (MULTI/EXEC) of the lease, journal length and live holds."""
        k = self.keys
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(k.lease, ("id", "granted", "spent", "reserved", "expires_at"))
            pipe.xlen(k.journal)
            pipe.hlen(k.res)
            (lease_id, granted, spent, reserved, expires_at), xlen, hlen = await pipe.execute()
        g, s, r = _int(granted), _int(spent), _int(reserved)
        return LeaseSnapshot(
            lease_id=lease_id.decode() if isinstance(lease_id, bytes) else lease_id,
            granted_micros=g,
            spent_micros=s,
            reserved_micros=r,
            remaining_micros=g - s - r,
            expires_at_ms=_int(expires_at),
            journal_length=int(xlen),
            live_reservations=int(hlen),
        )

    # -- coordination between the replicas of one agent's sidecar --------------------------------

    async def try_refresh_lock(self, owner: str, ttl_ms: int) -> bool:
        """One replica at a time talks to the control plane about the lease."""
        return bool(await self._redis.set(self.keys.refresh_lock, owner, nx=True, px=ttl_ms))

    async def release_refresh_lock(self, owner: str) -> None:
        await self._scripts.run(_LUA_UNLOCK, (self.keys.refresh_lock,), (owner,))

    async def heartbeat(self, replica_id: str, now_ms: int | None = None) -> None:
        """Say this replica is alive, so the last one out knows it is last."""
        await self._redis.zadd(self.keys.members, {replica_id: _now_ms() if now_ms is None else now_ms})

    async def leave(self, replica_id: str, member_ttl_ms: int, now_ms: int | None = None) -> str | None:
        """Deregister; returns the lease id to hand back if no live replica remains."""
        now = _now_ms() if now_ms is None else now_ms
        lease_id = await self._scripts.run(
            _LUA_LEAVE, (self.keys.members, self.keys.lease), (replica_id, now, member_ttl_ms)
        )
        text = lease_id.decode() if isinstance(lease_id, bytes) else lease_id
        return text or None

    async def save_provider(self, provider: bytes) -> None:
        """The handshake's provider block (its key still sealed for the IC token), for every replica."""
        await self._redis.set(self.keys.provider, provider)

    async def load_provider(self) -> bytes | None:
        value = await self._redis.get(self.keys.provider)
        return value.encode() if isinstance(value, str) else value


def agent_cache_key(ic_token_digest: str) -> str:
    """Where replicas find the agent id of an IC token without a handshake of their own."""
    return f"iron:ic:{ic_token_digest}"


def usage_record(event_id: str, u: UsageEvent) -> bytes:
    """The budget protocol's record of one charged call (a report's entry), as JSON.

    It is made once, at commit, and journaled as it is: the flusher ships it without reading it.
    """
    return _encode(
        Usage(
            request_id=event_id,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cost_usd=usd(u.cost_micros, 6),
            model=u.model,
            provider=u.provider,
            timestamp=datetime.fromtimestamp(u.ts_ms / 1000, UTC),
            status=u.status,
            latency_ms=u.latency_ms,
        )
    )


class JournalEntry(NamedTuple):
    """One usage event read back from the journal stream: what the flusher needs of it."""

    stream_id: str
    #: The lease it was charged against ('' if none was installed).
    lease_id: str
    #: :func:`usage_record`'s JSON.
    usage: bytes


def _entry(stream_id: bytes | str, fields: dict[Any, Any]) -> JournalEntry:
    if isinstance(stream_id, bytes):  # the sidecar's client: decode_responses off
        return JournalEntry(stream_id.decode(), fields[b"lease_id"].decode(), fields[b"usage"])
    return JournalEntry(stream_id, fields["lease_id"], fields["usage"].encode())


class JournalReader:
    """The read side of an agent's journal: a consumer group shared by its sidecar replicas.

    An entry stays in the stream until :meth:`ack`, which the flusher calls only after the
    control plane answered; entries of a replica that died are claimed by a live one.
    """

    GROUP: Final = "flushers"

    def __init__(self, redis: Redis, keys: StoreKeys, consumer: str) -> None:
        self._redis = redis
        self._stream = keys.journal
        self._consumer = consumer

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._stream, self.GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(self, start: str, count: int, block_ms: int | None) -> list[JournalEntry]:
        try:
            reply = await self._redis.xreadgroup(
                self.GROUP, self._consumer, {self._stream: start}, count=count, block=block_ms
            )
        except ResponseError as exc:  # the group vanished (a Redis without persistence restarted)
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        entries: list[JournalEntry] = []
        for _, messages in cast("list[Any]", reply or []):  # redis-py types this reply loosely
            entries.extend(_entry(sid, fields) for sid, fields in messages if fields)
        return entries

    async def read_own_pending(self, count: int) -> list[JournalEntry]:
        """Entries delivered to this consumer but never acknowledged (e.g. before a crash)."""
        return await self._read("0", count, None)

    async def read_new(self, count: int, block_ms: int | None) -> list[JournalEntry]:
        """New entries; waits up to ``block_ms`` for the first one (``None``: does not wait)."""
        return await self._read(">", count, block_ms)

    async def claim_abandoned(self, min_idle_ms: int, count: int) -> list[JournalEntry]:
        """Take over entries another consumer was given but left unacknowledged for too long."""
        try:
            reply = await self._redis.xautoclaim(
                self._stream, self.GROUP, self._consumer, min_idle_ms, start_id="0-0", count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        return [_entry(sid, fields) for sid, fields in reply[1] if fields]

    async def ack(self, stream_ids: list[str]) -> None:
        """Done with these entries: acknowledge and delete them in one transaction."""
        if not stream_ids:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self._stream, self.GROUP, *stream_ids)
            pipe.xdel(self._stream, *stream_ids)
            await pipe.execute()

    async def depth(self) -> int:
        return int(await self._redis.xlen(self._stream))
