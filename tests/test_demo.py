"""The demo end to end, as ``python3 tasks.py demo`` runs it, on a fresh database."""

import asyncio
import os
import sys
from pathlib import Path

import msgspec
import pytest

from iron.embedded import ServiceUrls, scratch_database
from iron.fake_llm import ChatCompletion, ChatRequest, FakeLLM, Message, cost_micros, count_tokens
from iron.money import charge_micros

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 90


@pytest.mark.slow
async def test_demo_proves_no_overspend_and_an_exact_ledger(service_urls: ServiceUrls) -> None:
    async with scratch_database(service_urls.database_url, "iron_demo") as database_url:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": service_urls.redis_url,
            "PYTHONIOENCODING": "utf-8",
        }
        demo = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "iron.demo", "--no-live", "--budgets", "0.5,0.8"),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(demo.communicate(), TIMEOUT_S)
        except TimeoutError:
            demo.terminate()  # the demo stops its children in order on SIGTERM
            await demo.wait()
            pytest.fail(f"the demo did not finish in {TIMEOUT_S} s")
    text = output.decode()
    assert demo.returncode == 0, text
    assert "All proofs hold" in text, text
    assert text.count("✓") == 2 * 4, text  # two agents, four proofs each
    assert "✗" not in text, text
    for agent in ("alpha", "beta"):
        assert f"{agent}: refused after" in text, text


async def _chat(app: FakeLLM, body: bytes, authorization: bytes) -> tuple[int, bytes]:
    """One request through the ASGI app, without a server."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", authorization)],
    }
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status, content = sent[0]["status"], sent[1]["body"]
    assert isinstance(status, int)
    assert isinstance(content, bytes)
    return status, content


async def test_fake_llm_checks_the_key_and_bills_within_the_estimate() -> None:
    app = FakeLLM("sk-right", latency_ms=(0, 0))
    request = ChatRequest(model="fake-large", messages=[Message("user", "hello " * 50)], max_tokens=40)
    body = msgspec.json.encode(request)
    assert (await _chat(app, body, b"Bearer sk-wrong"))[0] == 401
    status, content = await _chat(app, body, b"Bearer sk-right")
    assert status == 200
    reply = msgspec.json.decode(content, type=ChatCompletion)
    again = msgspec.json.decode((await _chat(app, body, b"Bearer sk-right"))[1], type=ChatCompletion)
    assert (again.id, again.usage) == (reply.id, reply.usage)  # deterministic
    assert reply.usage.prompt_tokens == count_tokens(request.messages)
    assert 1 <= reply.usage.completion_tokens <= request.max_tokens
    cost = cost_micros(request.model, reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert charge_micros(reply.usage.cost_usd) == cost
    assert cost <= cost_micros(request.model, count_tokens(request.messages), request.max_tokens)
