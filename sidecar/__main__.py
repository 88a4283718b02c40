"""``iron-sidecar`` / ``python -m sidecar``: the budget sidecar next to an agent runtime.

Reads ``IRON_CONTROL_PLANE_URL``, ``IRON_IC_TOKEN`` and ``REDIS_URL`` (see README.md for
the rest). Serves on 127.0.0.1:8081 by default, or on a Unix socket.
"""

import argparse
import gc
import sys

import uvloop

from iron.logs import configure_logging
from sidecar.app import Sidecar
from sidecar.config import ConfigError, SidecarSettings
from sidecar.http import HttpServer
from sidecar.server import error_reply


async def serve(settings: SidecarSettings) -> None:
    sidecar = Sidecar(settings)
    app = await sidecar.start()
    # What start-up allocated lives as long as the process: keep the collector off it, so that
    # a full collection under load walks only what requests allocate (shorter pauses).
    gc.collect()
    gc.freeze()
    try:  # returns on SIGTERM / SIGINT, once the requests in flight are answered
        await HttpServer(app, error_reply).serve(settings.host, settings.port, settings.unix_socket)
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
