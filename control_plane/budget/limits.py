"""Budget limits: the admin's side of an agent's budget."""

from typing import Any

import asyncpg
from litestar import Request, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath, RawBody

from control_plane.audit import recorder as audit
from control_plane.auth.principals import UserPrincipal, require_admin
from control_plane.budget import repository as repo
from control_plane.budget import service
from control_plane.budget.schemas import BudgetChange, BudgetHistory, BudgetState, BudgetUpdate
from control_plane.lib.errors import not_found
from control_plane.lib.params import checked_id
from control_plane.realtime import publisher
from iron import ids
from iron.money import grant_micros, usd
from iron.timefmt import iso
from iron.validation import decode


@put("/api/v1/limits/agents/{agent_id:str}/budget")
async def set_agent_budget(
    request: Request[Any, Any, Any],
    agent_id: FromPath[str],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> BudgetState:
    require_admin(user)
    checked_id(ids.AGENT, agent_id, "agent_id")
    data = decode(body, BudgetUpdate)
    async with pool.acquire() as conn, conn.transaction():
        before, after = await service.set_budget(
            conn,
            agent_id,
            grant_micros(data.budget),
            force=data.force,
            changed_by=user.user_id,
            reason=data.reason,
        )
        await audit.record(
            conn,
            audit.actor_of(request, user),
            "BUDGET_UPDATED",
            "agent",
            agent_id,
            before={"budget": usd(before.budget)},
            after={"budget": usd(after.budget)},
            metadata={"reason": data.reason, "force_flag": data.force},
        )
    publisher.of(request.app.state).agent(agent_id, "budget_changed")
    return BudgetState(
        agent_id=agent_id,
        previous_budget=usd(before.budget),
        budget=usd(after.budget),
        spent=usd(after.spent),
        outstanding=usd(after.outstanding),
        remaining=usd(after.budget - after.spent - after.outstanding),
    )


@get("/api/v1/limits/agents/{agent_id:str}/budget/history")
async def agent_budget_history(
    agent_id: FromPath[str], user: NamedDependency[UserPrincipal], pool: NamedDependency[asyncpg.Pool]
) -> BudgetHistory:
    require_admin(user)
    checked_id(ids.AGENT, agent_id, "agent_id")
    if await repo.ledger_of(pool, agent_id) is None:
        raise not_found("Agent", agent_id=agent_id)
    rows = await repo.budget_history(pool, agent_id)
    return BudgetHistory(
        agent_id=agent_id,
        data=[
            BudgetChange(
                id=row["id"],
                old_budget=usd(row["old_micros"]),
                new_budget=usd(row["new_micros"]),
                changed_by=row["changed_by"],
                reason=row["reason"],
                created_at=iso(row["created_at"]),
            )
            for row in rows
        ],
    )


handlers = [set_agent_budget, agent_budget_history]
