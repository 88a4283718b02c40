"""Every request gets an id (``req_<uuid4>``), returned as ``X-Request-ID`` and in errors.

A well-formed id sent by the client is kept, so a trace can span services.
It is attached by an app-level ``before_send`` hook rather than middleware,
because Litestar runs middleware only for matched routes and a 404 needs an id too.
"""

import re
from typing import Any

from litestar.types import Message, Scope

from iron import ids

_HEADER = b"x-request-id"
_ACCEPTED = re.compile(rb"^[A-Za-z0-9_.:-]{8,100}$")
_STATE_KEY = "iron_request_id"


def request_id_of(scope: Any) -> str:
    """The request's id, fixed on first use."""
    state = scope.setdefault("state", {})
    rid: str | None = state.get(_STATE_KEY)
    if rid is None:
        incoming = next((v for k, v in scope.get("headers", ()) if k == _HEADER), b"")
        rid = incoming.decode() if _ACCEPTED.match(incoming) else ids.new_id(ids.REQUEST)
        state[_STATE_KEY] = rid
    return rid


async def attach_request_id(message: Message, scope: Scope) -> None:
    """App-level ``before_send`` hook. Async although it awaits nothing: Litestar runs a sync hook
    in a worker thread, for every message sent (each WebSocket frame too)."""
    if message["type"] == "http.response.start":
        headers = list(message.get("headers", []))
        headers.append((_HEADER, request_id_of(scope).encode()))
        message["headers"] = headers
