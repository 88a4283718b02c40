"""``iron-sidecar`` / ``python -m sidecar``: the budget sidecar next to an agent runtime.

Reads ``IRON_CONTROL_PLANE_URL``, ``IRON_IC_TOKEN`` and ``REDIS_URL`` (see README.md for
the rest). Serves on 127.0.0.1:8081 by default, or on a Unix socket.
"""

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator

import uvicorn
import uvloop

from iron.logs import configure_logging
from sidecar.app import Sidecar
from sidecar.config import ConfigError, SidecarSettings


class _Server(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM or SIGINT once it has stopped serving, which would end
    the process before the journal is flushed and the lease returned. Here a signal only asks the
    server to stop; the shutdown sequence then runs to the end."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


async def serve(settings: SidecarSettings) -> None:
    sidecar = Sidecar(settings)
    app = await sidecar.start()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        uds=settings.unix_socket,
        http="httptools",
        lifespan="off",
        access_log=False,
        log_config=None,  # ours (configure_logging): no tracebacks in the log
        backlog=4096,
        # a runtime's connection idles for the whole LLM call between reserve and commit
        timeout_keep_alive=75,
        proxy_headers=False,  # loopback only: no proxy in front, no per-request middleware
    )
    try:
        await _Server(config).serve()  # returns on SIGTERM / SIGINT
    finally:
        await sidecar.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iron-sidecar", description=__doc__)
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--unix-socket", default=None)
    args = parser.parse_args(argv)
    configure_logging()
    overrides = {
        k: v for k, v in (("host", args.host), ("port", args.port), ("unix_socket", args.unix_socket)) if v
    }
    try:
        settings = SidecarSettings.from_env(**overrides)
    except ConfigError as exc:
        print(f"iron-sidecar: {exc}", file=sys.stderr)
        return 2
    uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
