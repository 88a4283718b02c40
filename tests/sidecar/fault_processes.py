"""Real processes for the fault tests: sidecars and control planes we can kill, and a slow proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    """One server child process (sidecar or control plane) with its output in a log file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], port: int, log_dir: Path, health: str
    ):
        self.name = name
        self.argv = argv
        self.env = env
        self.port = port
        self.health = health
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.alive, f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            log.write(f"\n--- starting {' '.join(self.argv[1:])} at {time.ctime()} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                env={**os.environ, **self.env},
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=1.0) as http:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.url + self.health)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not ready in {timeout_s} s:\n{self.log_tail()}")
                await asyncio.sleep(0.05)

    async def start_ready(self, timeout_s: float = 30.0) -> ServerProcess:
        self.start()
        await self.wait_ready(timeout_s)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        assert self.alive, f"{self.name} is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait: a sidecar flushes its journal and returns its lease on the way out."""
        assert self.proc is not None
        assert self.alive, f"{self.name} is not running"
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop in {timeout_s} s:\n{self.log_tail()}") from None

    def cleanup(self) -> None:
        if self.proc is None or not self.alive:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def sidecar_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "sidecar", "--port", str(port)]


def control_plane_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "control_plane", "--port", str(port)]


class DelayingProxy:
    """A TCP proxy in front of the control plane that holds back requests to one path.

    HTTP/1.1 clients send one request at a time on a connection, so a chunk that starts with
    ``POST <path>`` is the start of such a request; it and the rest of that connection wait
    ``delay_s`` before going upstream. ``windows`` records each hold (monotonic start, end).
    """

    def __init__(self, upstream_port: int, path: str, delay_s: float) -> None:
        self._upstream_port = upstream_port
        self._prefix = f"POST {path} ".encode()
        self._delay_s = delay_s
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.windows: list[tuple[float, float]] = []
        self.requests = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> DelayingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, delay=True), self._pump(up_reader, writer, delay=False)
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, delay: bool) -> None:
        while data := await source.read(65536):
            if delay and data.startswith(b"POST "):
                self.requests += 1
                if data.startswith(self._prefix):
                    started = time.monotonic()
                    await asyncio.sleep(self._delay_s)
                    self.windows.append((started, time.monotonic()))
            sink.write(data)
            await sink.drain()
        with contextlib.suppress(OSError):
            sink.write_eof()
