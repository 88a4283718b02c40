"""Sidecar settings, read once from the environment."""

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from iron.money import grant_micros
from sidecar.store import DEFAULT_DEDUP_WINDOW_MS

DEFAULT_DEDUP_S = DEFAULT_DEDUP_WINDOW_MS / 1000

Reporting = Literal["batched", "per_request"]


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it and never its value."""


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    control_plane_url: str
    ic_token: str
    redis_url: str
    replica_id: str
    host: str = "127.0.0.1"
    port: int = 8081
    unix_socket: str | None = None
    lease_micros: int = 10_000_000  # what one handshake or refresh asks for
    low_water_micros: int = 5_000_000  # refresh ahead of need below this
    hold_ms: int = 60_000  # a reservation not committed or cancelled by then is released
    #: A commit or report replayed within this is a duplicate. The ids live in Redis (about 136
    #: bytes each: 49 MB for an hour at 100 calls/s); the control plane dedupes the ledger for
    #: good, so a later replay only makes this lease count it twice (the safe side).
    dedup_window_ms: int = DEFAULT_DEDUP_WINDOW_MS
    batch_size: int = 200
    batch_age_ms: int = 100
    reporting: Reporting = "batched"
    heartbeat_s: float = 15.0
    member_ttl_ms: int = 45_000  # a replica silent for three heartbeats is gone
    claim_idle_ms: int = 30_000  # a dead replica's unacknowledged journal is taken over after this
    control_plane_timeout_s: float = 5.0

    @property
    def refresh_lock_ms(self) -> int:
        """Held at most for one control-plane call: a replica that dies holding it blocks no one for long."""
        return int(self.control_plane_timeout_s * 1000) + 1000

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> "SidecarSettings":
        env = dict(os.environ if env is None else env)
        if not env.get("IRON_IC_TOKEN") and env.get("IRON_IC_TOKEN_FILE"):  # a mounted secret
            try:
                env["IRON_IC_TOKEN"] = Path(env["IRON_IC_TOKEN_FILE"]).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"IRON_IC_TOKEN_FILE cannot be read ({type(exc).__name__})") from None
        missing = [n for n in ("IRON_CONTROL_PLANE_URL", "IRON_IC_TOKEN", "REDIS_URL") if not env.get(n)]
        if missing:
            raise ConfigError(f"{', '.join(missing)} not set")
        if not env["IRON_IC_TOKEN"].startswith("ic_"):
            raise ConfigError("IRON_IC_TOKEN is not an IC token")
        reporting = env.get("IRON_REPORTING", "batched")
        if reporting not in ("batched", "per_request"):
            raise ConfigError("IRON_REPORTING must be 'batched' or 'per_request'")
        try:
            port = int(overrides.pop("port", None) or env.get("IRON_SIDECAR_PORT", 8081))  # type: ignore[call-overload]
            lease = grant_micros(env.get("IRON_LEASE_USD", "10"))
            low_water = grant_micros(env["IRON_LOW_WATER_USD"]) if "IRON_LOW_WATER_USD" in env else lease // 2
            values: dict[str, object] = {
                "control_plane_url": env["IRON_CONTROL_PLANE_URL"].rstrip("/"),
                "ic_token": env["IRON_IC_TOKEN"],
                "redis_url": env["REDIS_URL"],
                "replica_id": env.get("IRON_SIDECAR_ID") or f"{socket.gethostname()}:{port}",
                "port": port,
                "unix_socket": env.get("IRON_SIDECAR_SOCKET") or None,
                "lease_micros": lease,
                "low_water_micros": low_water,
                "hold_ms": int(env.get("IRON_RESERVATION_HOLD_MS", 60_000)),
                "dedup_window_ms": int(
                    float(env.get("IRON_DEDUP_WINDOW_S", DEFAULT_DEDUP_WINDOW_MS / 1000)) * 1000
                ),
                "batch_size": int(env.get("IRON_FLUSH_BATCH", 200)),
                "batch_age_ms": int(env.get("IRON_FLUSH_AGE_MS", 100)),
                "reporting": reporting,
                "claim_idle_ms": int(env.get("IRON_CLAIM_IDLE_MS", 30_000)),
                "control_plane_timeout_s": float(env.get("IRON_CONTROL_PLANE_TIMEOUT_S", 5)),
            }
            heartbeat = float(env.get("IRON_HEARTBEAT_S", 15))
            values["heartbeat_s"] = heartbeat
            values["member_ttl_ms"] = int(env.get("IRON_MEMBER_TTL_MS", int(heartbeat * 3000)))
        except ValueError as exc:
            raise ConfigError(f"invalid number in the sidecar settings: {exc}") from None
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.lease_micros <= 0 or not 0 <= settings.low_water_micros <= settings.lease_micros:
            raise ConfigError("need IRON_LEASE_USD > 0 and 0 <= IRON_LOW_WATER_USD <= IRON_LEASE_USD")
        if settings.hold_ms <= 0 or settings.dedup_window_ms < settings.hold_ms:
            raise ConfigError("need IRON_RESERVATION_HOLD_MS > 0 and IRON_DEDUP_WINDOW_S at least that long")
        if not 1 <= settings.batch_size <= 1000:
            raise ConfigError("IRON_FLUSH_BATCH must be between 1 and 1000")
        return settings
