"""``GET /api/health`` (200, or 503 naming the failed service) and ``GET /api/version``."""

import asyncio
import time
from typing import Any

import msgspec
from litestar import Request, Response, get

import iron
from iron.timefmt import iso, utcnow

_CHECK_TIMEOUT_S = 2.0


class ServiceError(msgspec.Struct):
    service: str
    message: str


class Health(msgspec.Struct, omit_defaults=True):
    status: str
    version: str
    timestamp: str
    services: dict[str, str]
    uptime_seconds: int
    errors: list[ServiceError] = []


class Build(msgspec.Struct):
    version: str
    environment: str


class Version(msgspec.Struct):
    current_version: str
    supported_versions: list[str]
    deprecated_versions: list[str]
    latest_endpoint: str
    build: Build


async def _probe(name: str, check: Any) -> ServiceError | None:
    try:
        await asyncio.wait_for(check, _CHECK_TIMEOUT_S)
    except TimeoutError:
        return ServiceError(name, "Connection timeout")
    except Exception:  # any failure means unhealthy; its text may hold secrets
        return ServiceError(name, "Unavailable")
    return None


@get("/api/health")
async def health(request: Request[Any, Any, Any]) -> Response[Health]:
    state = request.app.state
    results = await asyncio.gather(
        _probe("database", state.pool.fetchval("SELECT 1")),
        _probe("redis", state.redis.ping()),
    )
    errors = [error for error in results if error is not None]
    failed = {error.service for error in errors}
    body = Health(
        status="unhealthy" if errors else "healthy",
        version=iron.__version__,
        timestamp=iso(utcnow()),
        services={name: "unhealthy" if name in failed else "healthy" for name in ("database", "redis")},
        uptime_seconds=int(time.monotonic() - state.started_at),
        errors=errors,
    )
    return Response(body, status_code=503 if errors else 200)


@get(["/api/version", "/api/v1/version"])
async def version(request: Request[Any, Any, Any]) -> Version:
    return Version(
        current_version="v1",
        supported_versions=["v1"],
        deprecated_versions=[],
        latest_endpoint="/api/v1",
        build=Build(version=iron.__version__, environment=request.app.state.settings.environment),
    )


handlers = [health, version]
