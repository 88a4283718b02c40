"""Agent runtimes spending through their sidecar: reserve, the LLM call (simulated), commit.

Each user is one runtime on one sidecar (``--sidecar-urls``, round robin), speaking
the sidecar's own wire types. A commit counts as a success only when the sidecar
charged it, so after the run the ledger must hold exactly (successful commits) x
``--cost-usd``.
"""

import itertools
import random
import uuid

import gevent
import msgspec
from locust import FastHttpUser, task
from locust.env import Environment

from bench.locustfiles._common import options
from sidecar.schemas import OUTCOME_HEADER, CommitRequest, ReserveRequest, ReserveResponse

_JSON = {"Content-Type": "application/json"}
_next_sidecar = itertools.count()


class Runtime(FastHttpUser):
    def __init__(self, environment: Environment) -> None:
        assert environment.parsed_options is not None  # locust parses its options before it makes users
        urls = [url for url in environment.parsed_options.sidecar_urls.split(",") if url]
        if urls:  # before the client is made: it is bound to the host
            self.host = urls[next(_next_sidecar) % len(urls)].rstrip("/")
        super().__init__(environment)

    @task
    def llm_call(self) -> None:
        opts = options(self)
        estimate = ReserveRequest(estimated_cost_usd=2 * opts.cost_usd, request_id=f"bench-{uuid.uuid4()}")
        reserved = self.client.post("/v1/reserve", data=msgspec.json.encode(estimate), headers=_JSON)
        if not reserved.ok:
            return
        reservation = msgspec.json.decode(reserved.content, type=ReserveResponse)
        low, high = opts.llm_latency_ms
        gevent.sleep(random.uniform(low, high) / 1000)
        usage = CommitRequest(
            reservation_id=reservation.reservation_id,
            cost_usd=opts.cost_usd,
            input_tokens=1200,
            output_tokens=300,
            model="gpt-4o-mini",
            provider="openai",
            status="completed",
        )
        body = msgspec.json.encode(usage)
        with self.client.post("/v1/commit", data=body, headers=_JSON, catch_response=True) as committed:
            outcome = committed.headers.get(OUTCOME_HEADER) if committed.headers else None
            if committed.status_code == 204 and outcome != "charged":
                committed.failure(f"commit outcome {outcome!r}, expected 'charged'")
