"""``python3 tasks.py demo``: the system on embedded defaults.

For now this is the control plane with a demo admin; the sidecar and simulated
runtimes join it as they land.
"""

import os
import sys

from control_plane.__main__ import main as control_plane_main

DEMO_ADMIN_EMAIL = "admin@example.com"
DEMO_ADMIN_PASSWORD = "admin-password"  # noqa: S105  (a local demo; production refuses defaults)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("IRON_BOOTSTRAP_ADMIN_EMAIL", DEMO_ADMIN_EMAIL)
    os.environ.setdefault("IRON_BOOTSTRAP_ADMIN_PASSWORD", DEMO_ADMIN_PASSWORD)
    print(
        "Iron Cage demo: control plane on http://127.0.0.1:8080 "
        f"(admin {os.environ['IRON_BOOTSTRAP_ADMIN_EMAIL']}); Ctrl-C stops it.",
        flush=True,
    )
    return control_plane_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
