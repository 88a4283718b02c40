"""The hot path's Redis transport, against a real Redis (and a deliberately silent server)."""

import asyncio
import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest
import redis.asyncio as redis
from redis.exceptions import ResponseError

from iron.embedded import EmbeddedValkey, default_data_root
from sidecar.scripts import LuaScript, ScriptClient

ECHO = LuaScript.of("return {KEYS[1], ARGV[1]}")
FAIL = LuaScript.of("return redis.error_reply('BOOM no good')")


@pytest.fixture
async def client(redis_url: str) -> ScriptClient:
    return ScriptClient.from_url(redis_url)


async def test_concurrent_calls_each_get_their_own_reply(client: ScriptClient) -> None:
    replies = await asyncio.gather(*(client.run(ECHO, (f"k{n}",), (n,)) for n in range(2000)))
    assert replies == [[f"k{n}".encode(), str(n).encode()] for n in range(2000)]
    await client.aclose()


async def test_a_cancelled_call_does_not_shift_the_replies_of_others(client: ScriptClient) -> None:
    slow = LuaScript.of(
        "local t = redis.call('TIME') while redis.call('TIME')[2] - t[2] < 20000 "
        "and redis.call('TIME')[1] == t[1] do end return ARGV[1]"
    )
    first = asyncio.create_task(client.run(slow, ("a",), ("first",)))
    second = asyncio.create_task(client.run(ECHO, ("b",), ("second",)))
    await asyncio.sleep(0.005)
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    assert await second == [b"b", b"second"]
    assert await client.run(ECHO, ("c",), ("third",)) == [b"c", b"third"]
    await client.aclose()


async def test_noscript_loads_and_retries_and_errors_raise(client: ScriptClient, redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    await admin.script_flush()
    assert await client.run(ECHO, ("k",), ("v",)) == [b"k", b"v"]
    assert await admin.script_exists(ECHO.sha) == [True]
    with pytest.raises(ResponseError, match="BOOM"):
        await client.run(FAIL, ("k",), ())
    await admin.aclose()
    await client.aclose()


async def test_a_killed_connection_fails_calls_in_flight_and_the_next_call_reconnects() -> None:
    # a server of its own: killing every client must not touch the suite's other connections
    base = default_data_root()  # exists only if the suite started embedded servers itself
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(dir=base))
    with EmbeddedValkey(root / "valkey") as valkey:
        url = valkey.url()
        client, admin = ScriptClient.from_url(url), redis.Redis.from_url(url)
        await client.run(ECHO, ("k",), ("before",))
        await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        with contextlib.suppress(ConnectionError):  # the call that discovers the loss may fail
            await client.run(ECHO, ("k",), ("during",))
        assert await client.run(ECHO, ("k",), ("after",)) == [b"k", b"after"]
        await admin.aclose()
        await client.aclose()
    shutil.rmtree(root, ignore_errors=True)


async def test_a_silent_server_is_given_up_on_after_the_timeout() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)  # accepts, reads, never answers

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ScriptClient("127.0.0.1", port, timeout_s=0.2)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(client.run(ECHO, ("k",), ("v",)), 5)
    server.close()
    await client.aclose()


async def test_connecting_to_nothing_is_a_connection_error() -> None:
    client = ScriptClient("127.0.0.1", 1, timeout_s=0.5)
    with pytest.raises(ConnectionError):
        await client.run(ECHO, ("k",), ("v",))
