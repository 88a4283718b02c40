"""The control plane, assembled in one place."""

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as redis
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide

from control_plane.agents import controllers as agents
from control_plane.analytics import controllers as analytics
from control_plane.api_tokens import controllers as api_tokens
from control_plane.audit import controllers as audit
from control_plane.auth import controllers as auth
from control_plane.auth.principals import current_user
from control_plane.budget import limits, protocol
from control_plane.budget.sweeper import run_sweeper
from control_plane.dashboard import controllers as dashboard
from control_plane.lib import openapi, ratelimit
from control_plane.lib.db import create_pool, provide_pool
from control_plane.lib.errors import exception_handlers
from control_plane.lib.migrations import apply_migrations
from control_plane.lib.request_id import attach_request_id
from control_plane.projects import controllers as projects
from control_plane.providers import controllers as providers
from control_plane.realtime import channels as realtime_channels
from control_plane.realtime import controllers as realtime
from control_plane.realtime.publisher import Publisher
from control_plane.requests import controllers as budget_requests
from control_plane.settings import Settings
from control_plane.system import controllers as system
from control_plane.tokens import controllers as ic_tokens
from control_plane.users import controllers as users
from control_plane.users.service import ensure_bootstrap_admin

log = logging.getLogger("iron.control_plane")


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    channels = realtime_channels.plugin(settings)
    routing = realtime_channels.Routing.for_redis(settings.redis_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await create_pool(
            settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
        )
        redis_client = redis.Redis.from_url(settings.redis_url)
        try:
            async with pool.acquire() as conn:
                applied = await apply_migrations(conn)
            if applied:
                log.info("applied migrations: %s", ", ".join(applied))
            if settings.bootstrap_admin_email and settings.bootstrap_admin_password:
                await ensure_bootstrap_admin(
                    pool, settings.bootstrap_admin_email, settings.bootstrap_admin_password
                )
            async with Publisher(channels, routing, pool).running() as publisher:
                app.state.update(
                    pool=pool, redis=redis_client, publisher=publisher, started_at=time.monotonic()
                )
                sweeper = asyncio.create_task(
                    run_sweeper(
                        pool, settings.sweep_interval_s, publisher, settings.usage_events_retention_months
                    )
                )
                # What start-up made lives as long as the process: keep it out of the collector's full
                # passes, whose pauses otherwise show as the feed's and the API's slowest responses.
                gc.freeze()
                try:
                    yield
                finally:
                    sweeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sweeper
        finally:
            await redis_client.aclose()
            await pool.close()

    route_handlers: list[Any] = [
        *system.handlers,
        *auth.handlers,
        *users.handlers,
        *api_tokens.handlers,
        *providers.handlers,
        *projects.handlers,
        *agents.handlers,
        *ic_tokens.handlers,
        *limits.handlers,
        *budget_requests.handlers,
        *audit.handlers,
        *protocol.handlers,
        *analytics.handlers,
        *realtime.handlers,
        *dashboard.handlers,
    ]
    return Litestar(
        route_handlers=route_handlers,
        lifespan=[lifespan],
        plugins=[channels],
        dependencies={
            "pool": Provide(provide_pool, sync_to_thread=False),
            "user": Provide(ratelimit.per_user(current_user)),
        },
        exception_handlers=exception_handlers,
        before_send=[attach_request_id, ratelimit.attach_headers],
        state=State(
            {
                "settings": settings,
                "rate_limits": ratelimit.RateLimits.from_settings(settings),
                "ws_routing": routing,
            }
        ),
        openapi_config=openapi.config(),
        logging_config=None,
        debug=False,
    )
