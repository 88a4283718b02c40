"""A local stand-in for an OpenAI-style provider, so the demo spends money without a network.

It is deterministic (the same request always gets the same completion length and latency) and
it checks the Bearer key against the one it was started with: a runtime gets through only with
the key its sidecar handed it. Costs come from a fixed price table, as a provider's bill would.

``python -m iron.fake_llm --port P`` serves ``POST /v1/chat/completions`` with the key from
``FAKE_LLM_API_KEY``.
"""

import argparse
import asyncio
import hashlib
import hmac
import os
import sys
import time
from typing import Annotated, Any

import msgspec
import uvicorn

from iron.money import usd

API_KEY_ENV = "FAKE_LLM_API_KEY"
#: Microdollars per input token and per output token (that is, USD per million tokens).
PRICES: dict[str, tuple[int, int]] = {"fake-large": (15, 60), "fake-small": (3, 12)}


class Message(msgspec.Struct):
    role: str
    content: str


class ChatRequest(msgspec.Struct, kw_only=True):
    model: str
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 256


class Choice(msgspec.Struct):
    index: int
    message: Message
    finish_reason: str


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    #: What this call cost, as providers that bill per call report it.
    cost_usd: float


class ChatCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


def count_tokens(messages: list[Message]) -> int:
    """The provider's tokenizer (about four characters a token); runtimes use it to estimate."""
    return sum(4 + (len(message.content) + 3) // 4 for message in messages)


def cost_micros(model: str, input_tokens: int, output_tokens: int) -> int:
    per_input, per_output = PRICES[model]
    return input_tokens * per_input + output_tokens * per_output


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return status, msgspec.json.encode(body)


class FakeLLM:
    """The ASGI app: one endpoint, OpenAI's request and response shapes."""

    def __init__(self, api_key: str, latency_ms: tuple[int, int] = (40, 160)) -> None:
        self._authorization = f"Bearer {api_key}".encode()
        self._latency_ms = latency_ms

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, content = await self._handle(scope, body)
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _handle(self, scope: dict[str, Any], body: bytes) -> tuple[int, bytes]:
        if (scope["method"], scope["path"]) != ("POST", "/v1/chat/completions"):
            return _error(404, "not_found", "Unknown endpoint")
        authorization = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(authorization, self._authorization):
            return _error(401, "invalid_api_key", "Incorrect API key provided")
        try:
            request = msgspec.json.decode(body, type=ChatRequest)
        except msgspec.DecodeError as exc:
            return _error(400, "invalid_request", str(exc))
        if request.model not in PRICES:
            return _error(404, "model_not_found", f"The model {request.model!r} does not exist")
        digest = hashlib.sha256(msgspec.json.encode(request)).digest()
        low, high = self._latency_ms
        await asyncio.sleep((low + int.from_bytes(digest[:2]) % (high - low + 1)) / 1000)
        prompt = count_tokens(request.messages)
        completion = 1 + int.from_bytes(digest[2:6]) % request.max_tokens
        reply = ChatCompletion(
            id=f"chatcmpl-{digest.hex()[:24]}",
            created=int(time.time()),
            model=request.model,
            choices=[Choice(0, Message("assistant", f"({completion} tokens of a reply)"), "stop")],
            usage=Usage(
                prompt,
                completion,
                prompt + completion,
                usd(cost_micros(request.model, prompt, completion), 6),
            ),
        )
        return 200, msgspec.json.encode(reply)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iron.fake_llm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    api_key = os.environ.get(API_KEY_ENV)
    if not api_key:
        print(f"fake_llm: {API_KEY_ENV} is not set", file=sys.stderr)
        return 2
    uvicorn.run(FakeLLM(api_key), host=args.host, port=args.port, lifespan="off", log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
