"""A sidecar in the tests' event loop on its own HTTP server, against real control planes and Redis."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from sidecar.app import Sidecar
from sidecar.config import SidecarSettings
from sidecar.http import HttpServer
from sidecar.server import error_reply
from tests.conftest import AgentHandle

StartSidecar = Callable[..., Awaitable[tuple[Sidecar, httpx.AsyncClient]]]


@pytest.fixture
async def start_sidecar(control_plane_processes: list[str], redis_url: str) -> AsyncIterator[StartSidecar]:
    """Start sidecars for an agent; each is stopped (journal flushed, lease returned) at the end."""
    running: list[tuple[Sidecar, HttpServer, httpx.AsyncClient]] = []

    async def start(
        agent: AgentHandle, replica: str = "r1", **overrides: Any
    ) -> tuple[Sidecar, httpx.AsyncClient]:
        env = {
            "IRON_CONTROL_PLANE_URL": control_plane_processes[len(running) % 2],
            "IRON_IC_TOKEN": agent.ic_token,
            "REDIS_URL": redis_url,
            "IRON_SIDECAR_ID": f"{agent.id}-{replica}",
        }
        env.update({k: str(v) for k, v in overrides.items() if k.isupper()})  # as the environment says
        fields = {k: v for k, v in overrides.items() if not k.isupper()}  # settings with no variable
        settings = SidecarSettings.from_env(env, **{"heartbeat_s": 0.2, "batch_age_ms": 20, **fields})
        sidecar = Sidecar(settings)
        server = HttpServer(await sidecar.start(), error_reply)
        await server.start()
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}")
        running.append((sidecar, server, http))
        return sidecar, http

    yield start
    for sidecar, server, http in reversed(running):
        await http.aclose()
        await server.stop()
        await sidecar.stop()
