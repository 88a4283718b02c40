"""Randomized sequences of ledger operations against a model, invariants checked after every step.

The model is a deliberately naive re-statement of DESIGN.md section 4 in
integer cents; the application must agree with it exactly, and the raw rows
must satisfy the invariants after every operation.
"""

import itertools
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_plane.budget.service import expire_leases
from tests.conftest import MakeAgent
from tests.control_plane.helpers import usage
from tests.ledger_checks import assert_ledger_invariants

CENT = 10_000  # microdollars
INITIAL_BUDGET_CENTS = 5_000


@dataclass
class ModelLease:
    id: str
    granted: int
    spent: int = 0
    open: bool = True


@dataclass
class Model:
    budget: int
    spent: int = 0
    leases: list[ModelLease] = field(default_factory=list)
    charged_ids: dict[str, int] = field(default_factory=dict)

    @property
    def outstanding(self) -> int:
        return sum(max(lease.granted - lease.spent, 0) for lease in self.leases if lease.open)

    @property
    def available(self) -> int:
        return self.budget - self.spent - self.outstanding

    def charge(self, lease: ModelLease, request_id: str, cost: int) -> bool:
        if request_id in self.charged_ids:
            return False
        self.charged_ids[request_id] = cost
        self.spent += cost
        lease.spent += cost
        return True


lease_pick = st.integers(min_value=0, max_value=7)
cents = st.integers(min_value=0, max_value=900)
operations = st.one_of(
    st.tuples(st.just("handshake"), st.integers(min_value=1, max_value=3_000)),
    st.tuples(st.just("report"), lease_pick, cents, st.booleans()),
    st.tuples(st.just("batch"), lease_pick, st.lists(cents, min_size=1, max_size=5), st.booleans()),
    st.tuples(st.just("refresh"), lease_pick, st.integers(min_value=0, max_value=2_000)),
    st.tuples(st.just("return"), lease_pick),
    st.tuples(st.just("expire"), lease_pick),
    st.tuples(st.just("budget"), st.integers(min_value=0, max_value=10_000), st.booleans()),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(operations, min_size=1, max_size=25))
async def test_ledger_matches_the_model_after_every_operation(
    steps: list[tuple[Any, ...]],
    client: Any,
    pool: asyncpg.Pool,
    make_agent: MakeAgent,
    admin_headers: dict[str, str],
) -> None:
    agent = await make_agent(budget=INITIAL_BUDGET_CENTS / 100)
    model = Model(budget=INITIAL_BUDGET_CENTS * CENT)
    call_ids = (f"call-{n}" for n in itertools.count())

    async def post(path: str, body: dict[str, Any]) -> Any:
        return await client.post(path, headers=agent.headers, json=body)

    for step in steps:
        kind = step[0]
        lease = (
            model.leases[step[1] % len(model.leases)]
            if model.leases
            and kind
            not in (
                "handshake",
                "budget",
            )
            else None
        )
        if kind == "handshake":
            requested = step[1] * CENT
            expected = max(0, min(requested, model.available))
            response = await post("/api/v1/budget/handshake", {"requested_budget": step[1] / 100})
            if expected == 0:
                assert response.status_code == 403, response.text
            else:
                assert response.status_code == 200, response.text
                assert round(response.json()["budget_granted"] * 1_000_000) == expected
                model.leases.append(ModelLease(response.json()["lease_id"], expected))
        elif lease is None:
            continue
        elif kind == "report":
            _, _, cost_cents, replay = step
            request_id = next(iter(model.charged_ids)) if replay and model.charged_ids else next(call_ids)
            cost = model.charged_ids.get(request_id, cost_cents * CENT)
            response = await post("/api/v1/budget/report", usage(lease.id, cost / 1_000_000, request_id))
            assert response.status_code == 204, response.text
            model.charge(lease, request_id, cost)
        elif kind == "batch":
            _, _, costs, replay = step
            items = [(next(call_ids), c * CENT) for c in costs]
            if replay and model.charged_ids:
                replayed = next(iter(model.charged_ids))
                items.append((replayed, model.charged_ids[replayed]))
            body = {
                "lease_id": lease.id,
                "reports": [usage(None, cost / 1_000_000, rid) for rid, cost in items],
            }
            response = await post("/api/v1/budget/report", body)
            assert response.status_code == 200, response.text
            accepted = sum(model.charge(lease, rid, cost) for rid, cost in items)
            assert response.json()["accepted"] == accepted
            assert response.json()["duplicates"] == len(items) - accepted
        elif kind == "refresh":
            requested = step[2] * CENT
            response = await post(
                "/api/v1/budget/refresh", {"lease_id": lease.id, "requested_budget": step[2] / 100}
            )
            expected = max(0, min(requested, model.available))
            if not lease.open:
                assert response.status_code == 409, response.text
            elif requested > 0 and expected == 0:
                assert response.status_code == 403, response.text
            else:
                assert response.status_code == 200, response.text
                lease.granted += expected
        elif kind == "return":
            response = await post("/api/v1/budget/return", {"lease_id": lease.id})
            assert response.status_code == 200, response.text
            unused = max(lease.granted - lease.spent, 0) if lease.open else 0
            assert round(response.json()["returned"] * 1_000_000) == unused
            lease.open = False
        elif kind == "expire":
            await pool.execute(
                "UPDATE leases SET expires_at = now() - interval '1 second' WHERE id = $1", lease.id
            )
            await expire_leases(pool)
            lease.open = False
        if kind == "budget":
            _, new_cents, force = step
            new = new_cents * CENT
            response = await client.put(
                f"/api/v1/limits/agents/{agent.id}/budget",
                headers=admin_headers,
                json={"budget": new_cents / 100, "force": force},
            )
            if new >= model.budget:
                assert response.status_code == 200, response.text
                model.budget = new
            elif not force:
                assert response.status_code == 400, response.text
            elif new < model.spent + model.outstanding:
                assert response.status_code == 409, response.text
            else:
                assert response.status_code == 200, response.text
                model.budget = new
        state = await assert_ledger_invariants(pool, agent.id)
        assert (state.budget, state.spent, state.outstanding) == (
            model.budget,
            model.spent,
            model.outstanding,
        ), step
