"""Every request gets an id (``req_<uuid4>``), returned as ``X-Request-ID`` and in errors.

A well-formed id sent by the client is kept, so a trace can span services.
Plain ASGI, so it costs one header write per response.
"""

import re
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from iron import ids

_HEADER = b"x-request-id"
_ACCEPTED = re.compile(rb"^[A-Za-z0-9_.:-]{8,100}$")
_STATE_KEY = "iron_request_id"


def request_id_of(scope: Any) -> str:
    state = scope.get("state") or {}
    return str(state.get(_STATE_KEY, ""))


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        incoming = next((v for k, v in scope["headers"] if k == _HEADER), b"")
        rid = incoming.decode() if _ACCEPTED.match(incoming) else ids.new_id(ids.REQUEST)
        scope.setdefault("state", {})[_STATE_KEY] = rid  # type: ignore[typeddict-item]
        encoded = rid.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((_HEADER, encoded))
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_id)

    return middleware
