"""Budget-change requests: ``pending`` -> ``approved`` | ``rejected`` | ``cancelled``, each final.

Every function runs in the caller's transaction and writes exactly one audit
entry there, so a transition and its entry commit or roll back together.

Locking: the ledger's order is the agent's row first, then rows that hang off
it. An approval follows it (agent, then request) because it changes the budget
through :func:`control_plane.budget.service.set_budget`, which locks the agent.
Rejecting and cancelling take the request's lock alone, so no two transactions
can wait on each other in opposite orders. Racing transitions of one request,
in one process or several, queue on its row lock: the first wins and the
others find it no longer pending (409), so an approval is applied once.
"""

from control_plane.agents.repository import AgentRow
from control_plane.audit import recorder as audit
from control_plane.budget import repository as budget_repo
from control_plane.budget import service as budget_service
from control_plane.lib.db import Conn
from control_plane.lib.errors import conflict, not_found, validation_error
from control_plane.requests import repository as repo
from control_plane.requests.repository import LockedRequest
from iron import ids
from iron.money import usd

RESOURCE = "budget_request"


def _must_raise(field: str, new_budget: int, current: int) -> None:
    """A request is for an increase; lowering a budget is the admin's direct, forced edit."""
    if new_budget <= current:
        raise validation_error({field: f"Must exceed the agent's current budget of {usd(current):.2f}"})


async def _pending(conn: Conn, request_id: str) -> LockedRequest:
    locked = await repo.lock(conn, request_id)
    if locked is None:
        raise not_found("Budget request", budget_request_id=request_id)
    if locked.status != "pending":
        raise conflict(f"The budget request is already {locked.status}", status=locked.status)
    return locked


async def create(
    conn: Conn,
    actor: audit.Actor,
    requester_id: str,
    agent: AgentRow,
    requested: int,
    justification: str,
) -> str:
    """File a request for ``agent`` (the caller checked that the requester may); returns its id."""
    _must_raise("requested_budget", requested, agent.budget_micros)
    request_id = ids.new_id(ids.BUDGET_REQUEST)
    await repo.insert(
        conn,
        request_id=request_id,
        agent_id=agent.id,
        requester_id=requester_id,
        current_budget=agent.budget_micros,
        requested_budget=requested,
        justification=justification,
    )
    await audit.record(
        conn,
        actor,
        "BUDGET_REQUEST_CREATED",
        RESOURCE,
        request_id,
        metadata={
            "agent_id": agent.id,
            "current_budget": usd(agent.budget_micros),
            "requested_budget": usd(requested),
            "justification": justification,
        },
    )
    return request_id


async def approve(
    conn: Conn,
    actor: audit.Actor,
    request_id: str,
    agent_id: str,
    approved: int | None,
    notes: str | None,
) -> None:
    """Raise the agent's budget to ``approved`` (default: the requested budget), once."""
    agent = await budget_repo.lock_agent(conn, agent_id)  # the agent first: the ledger's lock order
    pending = await _pending(conn, request_id)
    if agent is None or not agent.active:
        raise conflict("The request's agent was deleted", agent_id=agent_id)
    new_budget = pending.requested_budget if approved is None else approved
    _must_raise("approved_budget", new_budget, agent.budget)
    before, after = await budget_service.set_budget(
        conn,
        agent_id,
        new_budget,
        force=False,
        changed_by=actor.user_id,
        reason=f"Budget request {request_id} approved",
    )
    await repo.review(conn, request_id, "approved", actor.user_id, notes, new_budget)
    await audit.record(
        conn,
        actor,
        "BUDGET_REQUEST_APPROVED",
        RESOURCE,
        request_id,
        before={"status": "pending", "budget": usd(before.budget)},
        after={"status": "approved", "budget": usd(after.budget)},
        metadata={
            "agent_id": agent_id,
            "requested_budget": usd(pending.requested_budget),
            "approved_budget": usd(new_budget),
            "review_notes": notes,
        },
    )


async def reject(conn: Conn, actor: audit.Actor, request_id: str, notes: str) -> None:
    await _pending(conn, request_id)
    await repo.review(conn, request_id, "rejected", actor.user_id, notes, None)
    await audit.record(
        conn,
        actor,
        "BUDGET_REQUEST_REJECTED",
        RESOURCE,
        request_id,
        before={"status": "pending"},
        after={"status": "rejected"},
        metadata={"review_notes": notes},
    )


async def cancel(conn: Conn, actor: audit.Actor, request_id: str) -> None:
    await _pending(conn, request_id)
    await repo.cancel(conn, request_id)
    await audit.record(
        conn,
        actor,
        "BUDGET_REQUEST_CANCELLED",
        RESOURCE,
        request_id,
        before={"status": "pending"},
        after={"status": "cancelled"},
    )
