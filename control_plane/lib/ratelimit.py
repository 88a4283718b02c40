"""Rate limits from seed 004's table, counted in Redis so that they hold across replicas.

Algorithm: a sliding log. Each subject (a user, a token, an IP) has one Redis sorted set of the
times its admitted requests arrived; one Lua script (:data:`SCRIPT`) drops the entries older
than the window, counts the rest and admits the request only if fewer than ``limit`` remain,
in one atomic step on Redis's own clock. So "N per window" means exactly that: at most N in
*any* window, whichever replica serves, with no burst of 2N at a fixed window's edge (a fixed
window allows it) and no refill in mid-test (a token bucket refills continuously). A set holds
at most ``limit`` entries (100 at most with the seed's table), and a refused request is not
recorded, so hammering does not extend a lockout.

Where it applies: the limiter runs inside the ``user`` dependency (:func:`per_user` wraps
``current_user``), after authentication, so the subject is the user id, not a token that a
second login or an API token would reset. Every route that takes ``user`` is limited by the
category its method and path fall in (:func:`category_of`); a route that does not take
``user`` is never limited by it: health, version, login (it has its own per-IP throttle, which
can call :func:`hit` / :func:`enforce`), the budget protocol and analytics ingestion (IC token:
the sidecar must never be throttled), ``/ws`` (it counts its own connections and failed
handshakes per IP with :func:`count` / :func:`forget`) and the OpenAPI document.

Headers: a limited response (success or not) carries ``X-RateLimit-Limit``,
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (unix seconds at which the oldest counted
request leaves the window, i.e. when ``Remaining`` next grows); a 429 also ``Retry-After``
and the seed's ``RATE_LIMIT_EXCEEDED`` body. The decision is kept in the ASGI scope and the
app-level ``before_send`` hook :func:`attach_headers` writes the headers.

Redis unavailable (error or no answer within ``timeout_s``): fail open, logged once per outage.
The ledger is in PostgreSQL and never depends on this; refusing every user request while
Redis is down would turn a degraded cache into a full outage of the admin surface.
No headers are sent then, since nothing was counted.

Configuration: :class:`RateLimits`, kept in ``app.state.rate_limits``; built from
``IRON_RATE_LIMITS`` (``off``, or ``category=LIMIT/WINDOW_S,...`` overriding single rules) and
``IRON_RATE_LIMITS_SCALE`` (a factor applied to every limit), read from the settings object if
it has ``rate_limits`` / ``rate_limits_scale`` attributes, else from the process environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Protocol, TypeVar

import redis.asyncio as redis
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.types import Message, Scope
from redis.exceptions import NoScriptError, RedisError

from control_plane.lib.errors import ApiError
from control_plane.settings import SettingsError
from iron.timefmt import iso

log = logging.getLogger("iron.control_plane")

# Categories. The first six are the seed's table; ``write`` is ours (see ``DEFAULT_RULES``).
AUTH: Final = "auth"
TOKEN_WRITE: Final = "token_write"  # noqa: S105 (a category name)
TOKEN_ROTATE: Final = "token_rotate"  # noqa: S105
READ: Final = "read"
ANALYTICS: Final = "analytics"
SETTINGS: Final = "settings"
WRITE: Final = "write"
WS_CONNECT: Final = "ws_connect"  # opening /ws, per IP
WS_AUTH_FAILURE: Final = "ws_auth_failure"  # a /ws handshake that failed, per IP

#: What a category counts per: a user, the token named in the path, or the client's IP.
SCOPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        AUTH: "ip",
        TOKEN_WRITE: "user",
        TOKEN_ROTATE: "token",
        READ: "user",
        ANALYTICS: "user",
        SETTINGS: "user",
        WRITE: "user",
        WS_CONNECT: "ip",
        WS_AUTH_FAILURE: "ip",
    }
)


@dataclass(frozen=True, slots=True)
class Rule:
    limit: int
    window_s: int


DEFAULT_RULES: Final[Mapping[str, Rule]] = MappingProxyType(
    {
        AUTH: Rule(5, 300),  # login attempts per IP: applied by the login handler, not here
        TOKEN_WRITE: Rule(10, 3600),
        TOKEN_ROTATE: Rule(5, 3600),
        READ: Rule(100, 60),
        ANALYTICS: Rule(20, 60),
        SETTINGS: Rule(30, 3600),
        # Not in the seed: other mutations (agents, budget requests and their reviews, ...).
        # Enough for any person or script driving the API, few enough to stop a runaway loop.
        WRITE: Rule(60, 60),
        # Not in the seed either: /ws, applied by its handler. A dashboard tab opens one socket
        # and reconnects with a backoff up to 10 s (at most ~6 a minute even while a replica is
        # down); 120 a minute lets an office of a few dozen people behind one NAT reload at once.
        # A dashboard fails a handshake only once per expired or revoked token (it then signs
        # out), so 20 failures in 5 minutes is far above it, and far below a token-guessing or
        # socket-hoarding loop.
        WS_CONNECT: Rule(120, 60),
        WS_AUTH_FAILURE: Rule(20, 300),
    }
)

#: Paths never limited here, whatever their method (prefix match): health and version, the
#: auth endpoints (login has its own throttle; logout must always work), the seed's aliases of
#: the budget protocol, realtime and the OpenAPI document.
EXEMPT_PREFIXES: Final = (
    "/api/health",
    "/api/version",
    "/api/v1/version",
    "/api/v1/auth/",
    "/api/budget/",
    "/ws",
    "/schema",
)

#: The agent side (IC token), never throttled here: the sidecar's traffic must always pass.
AGENT_PATHS: Final = frozenset(
    {
        "/api/v1/budget/handshake",
        "/api/v1/budget/report",
        "/api/v1/budget/refresh",
        "/api/v1/budget/return",
        "/api/v1/agents/provider-key",
        "/api/v1/analytics/events",
    }
)

#: Admin configuration: a write here is a "settings update" of the seed's table.
SETTINGS_PREFIXES: Final = (
    "/api/v1/limits/",
    "/api/v1/users",
    "/api/v1/providers",
    "/api/v1/projects",
)

TOKEN_PREFIXES: Final = ("/api/v1/api-tokens", "/api/v1/tokens")

_READ_METHODS: Final = frozenset({"GET", "HEAD"})

#: Category overrides by ``(METHOD, path template)``, for handlers in modules that cannot carry
#: ``opt={"rate_limit": ...}``. A value of ``None`` exempts the route.
OVERRIDES: dict[tuple[str, str], str | None] = {}

#: The key a handler's ``opt`` names its category under (``None`` exempts it).
OPT_KEY: Final = "rate_limit"


def category_of(method: str, path: str, opt: Mapping[str, Any] | None = None) -> str | None:
    """The category of a request (``None``: not limited).

    ``path`` is the route's template (``/api/v1/agents/{agent_id}``); an explicit
    ``opt["rate_limit"]`` on the handler wins, then :data:`OVERRIDES`, then these rules.
    """
    method = method.upper()
    if opt is not None and OPT_KEY in opt:
        explicit: str | None = opt[OPT_KEY]
        return explicit
    if (method, path) in OVERRIDES:
        return OVERRIDES[(method, path)]
    if path.startswith(EXEMPT_PREFIXES) or path in AGENT_PATHS or method == "OPTIONS":
        return None
    if method in _READ_METHODS:
        if path.startswith("/api/v1/analytics/") or path.endswith("/export"):
            return ANALYTICS
        return READ
    if path.endswith(("/rotate", "/ic-token/regenerate")):
        return TOKEN_ROTATE
    if method in {"POST", "DELETE"} and (path.startswith(TOKEN_PREFIXES) or path.endswith("/ic-token")):
        return TOKEN_WRITE
    if path.startswith(SETTINGS_PREFIXES):
        return SETTINGS
    return WRITE


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimits:
    rules: Mapping[str, Rule] = field(default_factory=lambda: DEFAULT_RULES)
    enabled: bool = True
    #: How long a request waits for Redis before it is let through (fail open).
    timeout_s: float = 0.5
    key_prefix: str = "iron:rl"

    def rule(self, category: str) -> Rule | None:
        return self.rules.get(category) if self.enabled else None

    def key(self, category: str, subject: str) -> str:
        return f"{self.key_prefix}:{category}:{subject}"

    def scaled(self, factor: float) -> RateLimits:
        """Every limit times ``factor`` (rounded up, at least 1); the windows stay."""
        if not factor > 0 or math.isinf(factor):
            raise SettingsError("IRON_RATE_LIMITS_SCALE must be a positive number")
        rules = {
            name: Rule(max(1, math.ceil(rule.limit * factor)), rule.window_s)
            for name, rule in self.rules.items()
        }
        return replace(self, rules=MappingProxyType(rules))

    @classmethod
    def parse(cls, spec: str | None, scale: str | float | None = None) -> RateLimits:
        """``spec``: ``off``, or ``category=LIMIT/WINDOW_S`` entries separated by commas."""
        limits = cls()
        spec = (spec or "").strip()
        if spec.lower() in {"off", "false", "0", "disabled"}:
            return replace(limits, enabled=False)
        rules = dict(DEFAULT_RULES)
        for entry in filter(None, (part.strip() for part in spec.split(","))):
            name, _, value = entry.partition("=")
            limit, _, window = value.partition("/")
            name = name.strip()
            if name not in DEFAULT_RULES or not limit.strip().isdigit() or not window.strip().isdigit():
                raise SettingsError(
                    "IRON_RATE_LIMITS: expected 'off' or CATEGORY=LIMIT/WINDOW_SECONDS entries with "
                    "a category among " + ", ".join(DEFAULT_RULES)
                )
            rule = Rule(int(limit), int(window))
            if rule.limit < 1 or rule.window_s < 1:
                raise SettingsError("IRON_RATE_LIMITS: limits and windows must be >= 1")
            rules[name] = rule
        limits = replace(limits, rules=MappingProxyType(rules))
        if scale is not None and str(scale).strip():
            try:
                factor = float(scale)
            except ValueError:
                raise SettingsError("IRON_RATE_LIMITS_SCALE must be a positive number") from None
            limits = limits.scaled(factor)
        return limits

    @classmethod
    def from_settings(cls, settings: Any, env: Mapping[str, str] | None = None) -> RateLimits:
        """From ``settings.rate_limits`` / ``settings.rate_limits_scale`` when the settings have
        these fields, else from ``IRON_RATE_LIMITS`` / ``IRON_RATE_LIMITS_SCALE`` in ``env``
        (the process environment by default)."""
        if hasattr(settings, "rate_limits"):
            return cls.parse(settings.rate_limits, getattr(settings, "rate_limits_scale", None))
        env = os.environ if env is None else env
        return cls.parse(env.get("IRON_RATE_LIMITS"), env.get("IRON_RATE_LIMITS_SCALE"))


def limits_of(app_state: Any) -> RateLimits:
    """The app's limits (``app.state.rate_limits``), built from its settings on first use."""
    limits = app_state.get("rate_limits")
    if not isinstance(limits, RateLimits):
        limits = RateLimits.from_settings(app_state.get("settings"))
        app_state["rate_limits"] = limits
    return limits


# --- the counter -----------------------------------------------------------------------------

SCRIPT: Final = """\
-- sliding_window: admit one request if fewer than `limit` were admitted in the last window.
-- KEYS: [1] log ZSET (request nonce -> admission time in ms since the epoch, Redis's clock)
-- ARGV: [1] limit (integer >= 1), [2] window ms (integer >= 1), [3] nonce (unique per request)
-- Returns {admitted (1 or 0), count, oldest_ms, now_ms}: count = requests in the window after
--   this call, oldest_ms = the admission time of the oldest of them (now_ms if none).
-- Invariant: at most `limit` entries are newer than now - window, so at most `limit` requests
--   are admitted in any window, whichever replica asks; a refused request is not recorded.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - window))
local count = redis.call('ZCARD', KEYS[1])
local admitted = 0
if count < limit then
  redis.call('ZADD', KEYS[1], string.format('%d', now), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  count = count + 1
  admitted = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {admitted, count, tonumber(oldest[2]) or now, now}
"""
SCRIPT_SHA: Final = hashlib.sha1(SCRIPT.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    window_s: int
    #: Unix seconds at which the oldest counted request leaves the window.
    reset_at: int
    #: Seconds until a request would be admitted (0 when this one was).
    retry_after: int
    #: False when Redis could not be asked: the request was let through uncounted.
    counted: bool = True

    def headers(self) -> dict[str, str]:
        if not self.counted:
            return {}
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


_redis_down = False


def _fail_open(limit: int, window_s: int, exc: BaseException) -> Decision:
    global _redis_down
    if not _redis_down:
        _redis_down = True
        log.warning("rate limiter: Redis unavailable (%s), requests are not limited", type(exc).__name__)
    return Decision(True, limit, limit, window_s, 0, 0, counted=False)


async def _run(client: redis.Redis, key: str, limit: int, window_ms: int, nonce: str) -> list[int]:
    args = (key, limit, window_ms, nonce)
    try:
        reply = await client.evalsha(SCRIPT_SHA, 1, *args)
    except NoScriptError:
        reply = await client.eval(SCRIPT, 1, *args)  # also caches it for EVALSHA
    return [int(value) for value in reply]


async def hit(
    client: redis.Redis,
    key: str,
    limit: int,
    window_s: int,
    *,
    timeout_s: float | None = 0.5,
    nonce: str | None = None,
) -> Decision:
    """Count one request against ``key`` (at most ``limit`` per ``window_s`` seconds).

    ``nonce`` names the entry, for a caller that may take it back (:func:`forget`).
    Never raises for Redis trouble: it fails open (``allowed`` and not ``counted``).
    """
    global _redis_down
    try:
        admitted, count, oldest_ms, now_ms = await asyncio.wait_for(
            _run(client, key, limit, window_s * 1000, nonce or uuid.uuid4().hex), timeout_s
        )
    except (RedisError, OSError, TimeoutError) as exc:
        return _fail_open(limit, window_s, exc)
    if _redis_down:
        _redis_down = False
        log.info("rate limiter: Redis is back, limits apply again")
    free_at_ms = oldest_ms + window_s * 1000
    return Decision(
        allowed=bool(admitted),
        limit=limit,
        remaining=max(limit - count, 0),
        window_s=window_s,
        reset_at=math.ceil(free_at_ms / 1000),
        retry_after=0 if admitted else max(1, math.ceil((free_at_ms - now_ms) / 1000)),
    )


def _per(window_s: int) -> str:
    named = {1: "s", 60: "min", 3600: "hour", 86400: "day"}
    if window_s in named:
        return named[window_s]
    if window_s % 3600 == 0:
        return f"{window_s // 3600} hours"
    return f"{window_s // 60} min" if window_s % 60 == 0 else f"{window_s} s"


def too_many(decision: Decision) -> ApiError:
    """The seed's 429, in our error format, with every rate-limit header."""
    return ApiError(
        429,
        "RATE_LIMIT_EXCEEDED",
        f"Rate limit exceeded (max {decision.limit} req/{_per(decision.window_s)})",
        details={
            "limit": decision.limit,
            "window_seconds": decision.window_s,
            "retry_after_seconds": decision.retry_after,
            "reset_at": iso(datetime.fromtimestamp(decision.reset_at, UTC)),
        },
        headers=decision.headers(),
    )


# --- wiring into the app ---------------------------------------------------------------------

_STATE_KEY: Final = "iron_rate_limit"


def remember(scope: Any, decision: Decision) -> None:
    """Keep ``decision`` for :func:`attach_headers` (the response's headers)."""
    scope.setdefault("state", {})[_STATE_KEY] = decision


async def attach_headers(message: Message, scope: Scope) -> None:
    """App-level ``before_send`` hook: the remembered decision's headers, unless already set.

    Async although it awaits nothing, so that Litestar does not run it in a worker thread.
    """
    if message["type"] != "http.response.start":
        return
    decision: Decision | None = scope.get("state", {}).get(_STATE_KEY)
    if decision is None or not decision.counted:
        return
    headers = list(message.get("headers", []))
    present = {name.lower() for name, _ in headers}
    for name, value in decision.headers().items():
        raw = name.lower().encode()
        if raw not in present:
            headers.append((raw, value.encode()))
    message["headers"] = headers


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    return connection.client.host if connection.client else "unknown"


async def count(app_state: Any, category: str, subject: str, *, nonce: str | None = None) -> Decision | None:
    """Count one attempt against ``category`` for ``subject``, refused or not; ``None`` when the
    category has no rule (limits off). ``nonce``: see :func:`forget`."""
    limits = limits_of(app_state)
    rule = limits.rule(category)
    if rule is None:
        return None
    key = limits.key(category, subject)
    return await hit(app_state.redis, key, rule.limit, rule.window_s, timeout_s=limits.timeout_s, nonce=nonce)


async def forget(app_state: Any, category: str, subject: str, nonce: str) -> None:
    """Take back an attempt counted with ``nonce``, for limits that count only failures: count
    first (so a burst cannot slip past the limit), forget on success. Best effort: Redis trouble
    leaves the entry to expire with its window."""
    limits = limits_of(app_state)
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        await asyncio.wait_for(app_state.redis.zrem(limits.key(category, subject), nonce), limits.timeout_s)


async def enforce(request: Request[Any, Any, Any], category: str, subject: str) -> Decision | None:
    """Count this request against ``category`` for ``subject``; 429 when over the limit.

    For handlers that limit themselves, e.g. login:
    ``await ratelimit.enforce(request, ratelimit.AUTH, ratelimit.client_ip(request))``.
    Returns ``None`` when the category has no rule (limits off).
    """
    decision = await count(request.app.state, category, subject)
    if decision is None:
        return None
    remember(request.scope, decision)
    if not decision.allowed:
        raise too_many(decision)
    return decision


def route_category(request: Request[Any, Any, Any]) -> str | None:
    handler = request.scope.get("route_handler")
    path = request.scope.get("path_template") or request.url.path
    return category_of(request.method, path, getattr(handler, "opt", None))


async def limit_request(request: Request[Any, Any, Any], user_id: str) -> Decision | None:
    """Apply the route's category to an authenticated request (``None``: not limited)."""
    category = route_category(request)
    if category is None:
        return None
    subject = user_id
    if SCOPES.get(category) == "token":
        subject = next(iter(request.path_params.values()), user_id)  # the token named in the path
    elif SCOPES.get(category) == "ip":
        subject = client_ip(request)
    return await enforce(request, category, str(subject))


class HasUserId(Protocol):
    @property
    def user_id(self) -> str: ...


P = TypeVar("P", bound=HasUserId)


def per_user(resolve: Callable[[Request[Any, Any, Any]], Awaitable[P]]) -> Callable[..., Awaitable[P]]:
    """Wrap the ``user`` dependency so that every route taking ``user`` is rate limited.

    In the app: ``"user": Provide(ratelimit.per_user(current_user))``.
    """

    async def limited_user(request: Request[Any, Any, Any]) -> P:
        principal = await resolve(request)
        await limit_request(request, principal.user_id)
        return principal

    return limited_user
