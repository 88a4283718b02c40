"""The embedded servers are real PostgreSQL and Valkey: data survives restarts, nothing leaks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis

from iron.embedded import (
    EmbeddedPostgres,
    EmbeddedServerError,
    EmbeddedValkey,
    ServiceUrls,
    services,
)


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A fresh directory the PostgreSQL user can reach.

    As root, PostgreSQL runs as `nobody`, which cannot enter pytest's tmp_path (under a 0700
    directory), so use a 0755 directory under /var/tmp instead.
    """
    parent = "/var/tmp" if os.path.isdir("/var/tmp") else None  # noqa: S108
    root = Path(tempfile.mkdtemp(prefix="iron-test-", dir=parent))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _process_tree(pid: int) -> list[psutil.Process]:
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def _assert_gone(processes: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(processes, timeout=5)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"still running: {alive}"


async def test_postgres_runs_queries_and_keeps_data_across_restarts(data_root: Path) -> None:
    server = EmbeddedPostgres(data_root / "postgres")
    url = server.start()
    assert url.startswith("postgresql://postgres@127.0.0.1:")
    assert server.start() == url  # starting again is a no-op

    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT 40 + 2") == 42
        await conn.execute("CREATE TABLE budgets (agent text PRIMARY KEY, cents bigint NOT NULL)")
        await conn.execute("INSERT INTO budgets VALUES ('a1', 1000)")
        assert await conn.fetchval("SHOW server_encoding") == "UTF8"
    finally:
        await conn.close()

    assert server.pid is not None
    processes = _process_tree(server.pid)
    assert len(processes) > 1  # postmaster + background workers
    server.stop()
    _assert_gone(processes)
    assert not server.running
    server.stop()  # idempotent

    with EmbeddedPostgres(data_root / "postgres") as again:
        conn = await asyncpg.connect(again.url())
        try:
            assert await conn.fetchval("SELECT cents FROM budgets WHERE agent = 'a1'") == 1000
        finally:
            await conn.close()


async def test_postgres_recovers_after_being_killed(data_root: Path) -> None:
    """A SIGKILLed server leaves postmaster.pid behind; the next start recovers from the WAL."""
    server = EmbeddedPostgres(data_root / "postgres")
    conn = await asyncpg.connect(server.start())
    try:
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t VALUES (7)")  # committed: must survive the crash
    finally:
        await conn.close()
    assert server.pid is not None
    processes = _process_tree(server.pid)
    os.kill(server.pid, signal.SIGKILL)
    _assert_gone(processes)  # backends notice the dead postmaster and exit
    assert (data_root / "postgres" / "postmaster.pid").exists()
    server.stop()

    started = time.monotonic()
    with EmbeddedPostgres(data_root / "postgres") as again:
        assert time.monotonic() - started < 30
        conn = await asyncpg.connect(again.url())
        try:
            assert await conn.fetchval("SELECT x FROM t") == 7
        finally:
            await conn.close()


def test_postgres_refuses_a_second_server_on_the_same_data_dir(data_root: Path) -> None:
    with EmbeddedPostgres(data_root / "postgres") as first:
        second = EmbeddedPostgres(data_root / "postgres")
        with pytest.raises(EmbeddedServerError, match="still running"):
            second.start()
        assert first.running
        assert not second.running


def test_valkey_runs_commands_and_scripts_and_keeps_data_across_restarts(
    data_root: Path,
) -> None:
    server = EmbeddedValkey(data_root / "valkey")
    url = server.start()
    assert url.startswith("redis://127.0.0.1:")

    client = redis.Redis.from_url(url)
    try:
        assert client.set("budget:a1", 1000)
        assert client.get("budget:a1") == b"1000"
        script = "return redis.call('DECRBY', KEYS[1], ARGV[1])"
        assert client.eval(script, 1, "budget:a1", 250) == 750
    finally:
        client.close()

    assert server.pid is not None
    processes = _process_tree(server.pid)
    server.stop()
    _assert_gone(processes)
    server.stop()  # idempotent

    with EmbeddedValkey(data_root / "valkey") as again:
        client = redis.Redis.from_url(again.url())
        try:
            assert client.get("budget:a1") == b"750"  # replayed from the append-only file
        finally:
            client.close()


async def test_services_starts_what_the_environment_does_not_provide(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    servers = {"postgres", "valkey-server"}
    already = {p.pid for p in psutil.Process().children() if Path(p.exe()).name in servers}
    with services(data_root) as urls:
        conn = await asyncpg.connect(urls.database_url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
        client = redis.Redis.from_url(urls.redis_url)
        try:
            assert client.ping()
        finally:
            client.close()
        children = [  # the suite itself may run on embedded servers: count only this call's
            p for p in psutil.Process().children() if Path(p.exe()).name in servers and p.pid not in already
        ]
        assert len(children) == 2
    _assert_gone(children)

    monkeypatch.setenv("DATABASE_URL", "postgresql://db.example/iron")
    monkeypatch.setenv("REDIS_URL", "redis://cache.example/1")
    with services(data_root / "unused") as urls:
        assert urls == ServiceUrls("postgresql://db.example/iron", "redis://cache.example/1")
    assert not (data_root / "unused").exists()


@pytest.mark.parametrize("server_class", [EmbeddedPostgres, EmbeddedValkey])
def test_a_taken_port_is_an_error_not_someone_elses_server(
    data_root: Path, server_class: type[EmbeddedPostgres | EmbeddedValkey]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = server_class(data_root / "server", port=taken.getsockname()[1])
        with pytest.raises(EmbeddedServerError, match="in use"):
            server.start()
        assert not server.running


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as nobody")
def test_root_gets_a_clear_error_when_nobody_cannot_reach_the_data(data_root: Path) -> None:
    private = data_root / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    with pytest.raises(EmbeddedServerError, match=r"cannot enter .*private"):
        EmbeddedPostgres(private / "postgres").start()
