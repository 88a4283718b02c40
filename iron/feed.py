"""A client of the control plane's ``/ws`` feed, for the tests, the benchmark and scripts."""

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from iron.realtime import Auth, encode


def feed_url(base_url: str) -> str:
    """``http://host:port`` to ``ws://host:port/ws`` (``https`` to ``wss``)."""
    return "ws" + base_url.removeprefix("http").rstrip("/") + "/ws"


@contextlib.asynccontextmanager
async def connect(base_url: str, token: str, **options: Any) -> AsyncIterator[ClientConnection]:
    """Open the feed and send the auth message; the first message back is STATE_UPDATE or ERROR."""
    async with websockets.connect(feed_url(base_url), **options) as socket:
        await socket.send(encode(Auth(type="auth", token=token)).decode())
        yield socket
