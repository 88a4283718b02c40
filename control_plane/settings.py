"""Control-plane settings, read once from the environment."""

import base64
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from iron.crypto import decode_master_key

# Development defaults so that `tasks.py demo` runs with no setup. Production refuses them.
_DEV_JWT_SECRET = "iron-cage-development-jwt-secret-do-not-use"  # noqa: S105
_DEV_MASTER_KEY = base64.b64encode(b"iron-cage-dev-master-key-0000000").decode()


class SettingsError(Exception):
    """A setting is missing or unsafe; the message names it and never its value."""


def _whole(env: Mapping[str, str], name: str, default: int, low: int = 1, high: int | None = None) -> int:
    """A whole-number setting in ``[low, high]``; unset or empty: ``default``."""
    raw = env.get(name) or str(default)
    bounds = f"{low} or more" if high is None else f"{low} to {high}"
    if not (raw.isascii() and raw.isdigit()) or int(raw) < low or (high is not None and int(raw) > high):
        raise SettingsError(f"{name} must be a whole number, {bounds}")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A duration setting in seconds, above zero; unset or empty: ``default``."""
    raw = env.get(name) or str(default)
    try:
        value = float(raw) if raw.isascii() else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise SettingsError(f"{name} must be a number of seconds above 0")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    redis_url: str
    jwt_secret: str
    master_key: bytes
    environment: str = "development"
    bootstrap_admin_email: str | None = None
    bootstrap_admin_password: str | None = None
    access_token_ttl_s: int = 3600
    refresh_token_ttl_s: int = 30 * 86400
    lease_ttl_s: int = 15 * 60
    sweep_interval_s: float = 30.0
    db_pool_min: int = 2
    db_pool_max: int = 20
    rate_limits: str | None = None  # IRON_RATE_LIMITS: "off", or CATEGORY=LIMIT/WINDOW_S overrides
    rate_limits_scale: str | None = None  # IRON_RATE_LIMITS_SCALE: a factor on every limit
    ws_heartbeat_s: float = 30.0
    ws_recheck_s: float = 15.0  # how often a /ws socket's credential is checked again
    ws_auth_timeout_s: float = 10.0
    ws_backlog: int = 1000  # unsent messages a /ws client may fall behind by before it is dropped
    # Whole months of raw usage events kept before the current one; 0 keeps them all. Rollups
    # and the ledger are kept whatever it says.
    usage_events_retention_months: int = 0

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        environment = env.get("IRON_ENV", "development")
        jwt_secret = env.get("IRON_JWT_SECRET", _DEV_JWT_SECRET)
        master_key_text = env.get("IRON_MASTER_KEY", _DEV_MASTER_KEY)
        for name in ("DATABASE_URL", "REDIS_URL"):
            if not env.get(name):
                raise SettingsError(f"{name} is not set")
        if environment == "production":
            if jwt_secret == _DEV_JWT_SECRET or len(jwt_secret) < 32:
                raise SettingsError("IRON_JWT_SECRET must be set to 32+ random characters")
            if master_key_text == _DEV_MASTER_KEY:
                raise SettingsError("IRON_MASTER_KEY must be set in production")
        try:
            master_key = decode_master_key(master_key_text)
        except ValueError as exc:
            raise SettingsError(f"IRON_MASTER_KEY: {exc}") from None
        pool_min = _whole(env, "IRON_DB_POOL_MIN", 2, low=0)
        return cls(
            database_url=env["DATABASE_URL"],
            redis_url=env["REDIS_URL"],
            jwt_secret=jwt_secret,
            master_key=master_key,
            environment=environment,
            bootstrap_admin_email=env.get("IRON_BOOTSTRAP_ADMIN_EMAIL") or None,
            bootstrap_admin_password=env.get("IRON_BOOTSTRAP_ADMIN_PASSWORD") or None,
            access_token_ttl_s=_whole(env, "IRON_ACCESS_TOKEN_TTL", 3600),
            refresh_token_ttl_s=_whole(env, "IRON_REFRESH_TOKEN_TTL", 30 * 86400),
            lease_ttl_s=_whole(env, "IRON_LEASE_TTL", 15 * 60),
            sweep_interval_s=_seconds(env, "IRON_SWEEP_INTERVAL", 30),
            db_pool_min=pool_min,
            db_pool_max=_whole(env, "IRON_DB_POOL_MAX", 20, low=max(pool_min, 1)),
            rate_limits=env.get("IRON_RATE_LIMITS"),
            rate_limits_scale=env.get("IRON_RATE_LIMITS_SCALE"),
            ws_heartbeat_s=_seconds(env, "IRON_WS_HEARTBEAT_S", 30),
            ws_recheck_s=_seconds(env, "IRON_WS_RECHECK_S", 15),
            ws_auth_timeout_s=_seconds(env, "IRON_WS_AUTH_TIMEOUT_S", 10),
            ws_backlog=_whole(env, "IRON_WS_BACKLOG", 1000),
            usage_events_retention_months=_whole(
                env, "IRON_USAGE_EVENTS_RETENTION_MONTHS", 0, low=0, high=1200
            ),
        )
