#!/usr/bin/env python3
"""Project tasks, runnable with nothing but Python 3.11+:

    python3 tasks.py demo [args]    start the system (python -m iron.demo)
    python3 tasks.py test [args]    run the tests (python -m pytest)
    python3 tasks.py lint [paths]   ruff check + ruff format --check, then mypy
    python3 tasks.py serve [args]   run the control plane (python -m control_plane)
    python3 tasks.py bench [args]   run the benchmarks (python -m bench all)

Each task first makes sure a virtualenv with `pip install -e '.[dev]'` exists (reinstalling when
pyproject.toml changes), then runs in it. Stdlib only: this runs before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import stat
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
STAMP = ".iron-cage-installed"  # holds the sha256 of the pyproject.toml last installed
SHARED_TMP = Path("/var/tmp")  # noqa: S108 - survives reboots; ownership checked below

COMMANDS = {
    "demo": ("start the system", ["-m", "iron.demo"]),
    "test": ("run the tests", ["-m", "pytest"]),
    "lint": ("ruff check + ruff format --check, then mypy", None),
    "serve": ("run the control plane", ["-m", "control_plane"]),
    "bench": ("run the benchmarks (python -m bench all)", ["-m", "bench", "all"]),
}


def others_can_traverse(path: Path) -> bool:
    """Whether every directory down to `path` is enterable by other users (e.g. `nobody`)."""
    return all(not d.exists() or d.stat().st_mode & stat.S_IXOTH for d in [*path.parents, path])


def venv_dir() -> Path:
    """`.venv` in the repo, unless root's PostgreSQL-as-`nobody` could not reach it there."""
    if os.geteuid() != 0 or others_can_traverse(ROOT):
        return ROOT / ".venv"
    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]
    base = SHARED_TMP / f"iron-cage-{digest}"  # same folder iron.embedded uses for data
    if base.is_symlink() or (base.exists() and base.stat().st_uid != os.geteuid()):
        sys.exit(f"tasks.py: {base} exists but is not owned by you; remove it")
    return base / "venv"


def ensure_venv() -> Path:
    """Create/refresh the virtualenv; return its python."""
    env_dir = venv_dir()
    python = env_dir / "bin" / "python"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = env_dir / STAMP
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    os.umask(0o022)  # the embedded PostgreSQL runs as another user and must read the venv
    if not python.exists():
        print(f"tasks.py: creating virtualenv in {env_dir}", file=sys.stderr)
        env_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            venv.create(env_dir, with_pip=True, symlinks=True, clear=env_dir.exists())
        except (OSError, subprocess.CalledProcessError) as exc:
            sys.exit(f"tasks.py: cannot create a virtualenv ({exc}); on Debian/Ubuntu install python3-venv")
    print(
        f"tasks.py: installing the project into {env_dir} (pip install -e '.[dev]')",
        file=sys.stderr,
    )
    install = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if subprocess.run([*install, "-e", ".[dev]"], cwd=ROOT, check=False).returncode:  # noqa: S603
        sys.exit("tasks.py: pip install failed (see above); fix it and run the task again")
    stamp.write_text(wanted + "\n")
    return python


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 tasks.py",
        description="Iron Cage tasks; arguments after the task name are passed through.",
    )
    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for name, (help_text, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    task = parser.parse_args(argv[:1]).task
    extra = argv[1:]

    python = str(ensure_venv())
    os.chdir(ROOT)
    module_args = COMMANDS[task][1]
    if module_args is None:  # lint: run every check, report them all
        paths = extra or ["."]
        checks = [["ruff", "check", *paths], ["ruff", "format", "--check", *paths], ["mypy"]]
        codes = [subprocess.run([python, "-m", *c], check=False).returncode for c in checks]  # noqa: S603
        return max(codes)
    # exec: signals (Ctrl-C) and the exit code go straight to/from the task
    os.execv(python, [python, *module_args, *extra])  # noqa: S606


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
