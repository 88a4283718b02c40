"""``iron-control-plane`` / ``python -m control_plane``.

Without ``DATABASE_URL`` / ``REDIS_URL`` it starts embedded PostgreSQL and
Valkey from pinned pip packages, so a fresh machine needs nothing else.
"""

import argparse
import contextlib
import os
import sys

import uvicorn

from control_plane.settings import SettingsError
from iron.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iron-control-plane", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("IRON_HOST", "127.0.0.1"))
    # a string default goes through type=int too: a bad IRON_PORT is a usage error, not a traceback
    parser.add_argument("--port", type=int, default=os.environ.get("IRON_PORT", "8080"))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    configure_logging()

    with contextlib.ExitStack() as stack:
        if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
            from iron.embedded import default_data_root, services

            urls = stack.enter_context(services(default_data_root()))
            os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = urls.database_url, urls.redis_url
        try:
            from control_plane.settings import Settings

            Settings.from_env()  # fail fast, with a clear message, before the server starts
        except SettingsError as exc:
            print(f"iron-control-plane: {exc}", file=sys.stderr)
            return 2
        uvicorn.run(
            "control_plane.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            ws_per_message_deflate=False,  # /ws fans small messages out to many sockets: CPU over bytes
            log_config=None,  # ours (configure_logging): no tracebacks in the log
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
