"""Child processes of the demo and the benchmarks: started in order, each with a log, stopped cleanly.

Every child runs this interpreter on one of the project's modules, in a session
of its own (so Ctrl-C reaches only the parent, which stops the children in
order), and is signalled if the parent dies, so nothing is left behind.
"""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from iron.embedded import free_port, parent_death_signal

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


class StartFailed(Exception):
    """A child did not come up; the message carries the tail of its log."""


@dataclass
class Children:
    """Child processes, each with a log file; on exit sidecars stop first (they return leases)."""

    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, module_args: list[str], env: dict[str, str]) -> None:
        with (self.log_dir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(  # noqa: S603 - this interpreter, fixed modules, no shell
                [sys.executable, "-m", *module_args],
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only the demo, which stops them in order
                preexec_fn=parent_death_signal(signal.SIGTERM),  # no orphans if the demo is killed
            )
        self.procs[name] = proc

    def log_tail(self, name: str, lines: int = 20) -> str:
        text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, names: list[str]) -> dict[str, int]:
        """SIGTERM (a graceful stop), then kill whatever has not exited in time; the exit codes."""
        procs = {name: self.procs.pop(name) for name in names if name in self.procs}
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in procs.values():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return {name: proc.returncode for name, proc in procs.items()}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop([name for name in self.procs if name.startswith("sidecar-")])
        self.stop(list(self.procs))


async def wait_ready(http: httpx.AsyncClient, children: Children, name: str, url: str) -> None:
    """Until ``url`` answers below 500; fails with the log's tail if the process exits first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        with contextlib.suppress(httpx.TransportError):
            if (await http.get(url)).status_code < 500:
                return
        code = children.procs[name].poll()
        if code is not None or time.monotonic() > deadline:
            state = f"exited with code {code}" if code is not None else "did not start in time"
            raise StartFailed(f"{name} {state}; its log ends with:\n{children.log_tail(name)}")
        await asyncio.sleep(0.1)


async def start_control_planes(
    children: Children,
    database_url: str,
    redis_url: str,
    admin: tuple[str, str],
    count: int = 1,
    settings: dict[str, str] | None = None,
) -> list[str]:
    """``count`` control planes on one database and Redis, on free loopback ports, bootstrapping
    ``admin`` (email, password) and with ``settings`` as further variables; their base URLs once
    each answers its health check. They are named ``control-plane`` (``control-plane-N`` if several)."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "IRON_BOOTSTRAP_ADMIN_EMAIL": admin[0],
        "IRON_BOOTSTRAP_ADMIN_PASSWORD": admin[1],
        **(settings or {}),
    }
    urls = {}
    for n in range(count):
        name, port = "control-plane" if count == 1 else f"control-plane-{n}", free_port()
        children.start(name, ["control_plane", "--port", str(port)], env)
        urls[name] = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=5) as http:
        for name, url in urls.items():
            await wait_ready(http, children, name, f"{url}/api/health")
    return list(urls.values())
