"""Budget-change request endpoints.

Canonical paths under ``/api/v1/budget-requests``; the seed's paths under
``/api/v1/budget/requests`` are aliases, where approve and reject are PATCH.
Users file requests for their own agents and see their own requests; admins
see and review all; viewers only read. A request someone may not see is 404.
"""

from typing import Any

import asyncpg
from litestar import Request, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, RawBody

from control_plane.agents import service as agents
from control_plane.audit import recorder as audit
from control_plane.auth.principals import UserPrincipal, require_admin
from control_plane.budget.ledger import available
from control_plane.lib import openapi
from control_plane.lib.db import Conn
from control_plane.lib.errors import not_found, permission_denied
from control_plane.lib.filters import SEARCH, IdOf, OneOf
from control_plane.lib.listing import Listing
from control_plane.lib.pagination import Page, page_of
from control_plane.lib.params import checked_id
from control_plane.realtime import publisher
from control_plane.requests import repository, service
from control_plane.requests.repository import RequestRow
from control_plane.requests.schemas import (
    STATUSES,
    AgentFigures,
    BudgetRequest,
    BudgetRequestApprove,
    BudgetRequestCreate,
    BudgetRequestReject,
)
from iron import ids
from iron.money import grant_micros, usd
from iron.realtime import RequestAction
from iron.timefmt import iso
from iron.validation import decode

_CANONICAL = "/api/v1/budget-requests"
_ALIAS = "/api/v1/budget/requests"
_ONE = "/{budget_request_id:str}"
_LIST = Listing(
    {"status": OneOf(STATUSES), "agent_id": IdOf(ids.AGENT), "search": SEARCH},
    repository.SORTABLE,
    "-created_at",
    tiebreak="r.id",
)


def to_wire(row: RequestRow) -> BudgetRequest:
    return BudgetRequest(
        id=row.id,
        agent_id=row.agent_id,
        agent_name=row.agent_name,
        requester_id=row.requester_id,
        requester_name=row.requester_name,
        current_budget=usd(row.current_budget),
        requested_budget=usd(row.requested_budget),
        justification=row.justification,
        status=row.status,
        agent=AgentFigures(
            status=row.agent_status,
            budget=usd(row.agent_budget),
            spent=usd(row.agent_spent),
            outstanding=usd(row.agent_outstanding),
            remaining=usd(available(row.agent_budget, row.agent_spent, row.agent_outstanding)),
        ),
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
        approved_budget=None if row.approved_budget is None else usd(row.approved_budget),
        reviewed_by=row.reviewer_id,
        reviewed_at=None if row.reviewed_at is None else iso(row.reviewed_at),
        review_notes=row.review_notes,
    )


async def _visible(pool: asyncpg.Pool, user: UserPrincipal, budget_request_id: str) -> RequestRow:
    """The request, if this user may see it: its requester or an admin."""
    checked_id(ids.BUDGET_REQUEST, budget_request_id, "budget_request_id")
    row = await repository.by_id(pool, budget_request_id)
    if row is None or not (user.is_admin or row.requester_id == user.user_id):
        raise not_found("Budget request", budget_request_id=budget_request_id)
    return row


async def _fresh(conn: Conn, budget_request_id: str) -> RequestRow:
    row = await repository.by_id(conn, budget_request_id)
    assert row is not None  # requests are never deleted
    return row


def _announced(request: Request[Any, Any, Any], action: RequestAction, row: RequestRow) -> BudgetRequest:
    """Publish a committed transition on the live feed; the request as the caller gets it."""
    publisher.of(request.app.state).budget_request(action, row)
    return to_wire(row)


@post([_CANONICAL, _ALIAS], opt=openapi.doc(body=BudgetRequestCreate))
async def create_request(
    request: Request[Any, Any, Any],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> BudgetRequest:
    if user.role == "viewer":
        raise permission_denied("Viewers cannot request budget changes")
    data = decode(body, BudgetRequestCreate)
    agent = await agents.readable(pool, user, data.agent_id)  # someone else's agent is 404
    async with pool.acquire() as conn, conn.transaction():
        budget_request_id = await service.create(
            conn,
            audit.actor_of(request, user),
            user.user_id,
            agent,
            grant_micros(data.requested_budget),
            data.justification,
        )
        row = await _fresh(conn, budget_request_id)
    return _announced(request, "created", row)


@get([_CANONICAL, _ALIAS], opt=_LIST.doc())
async def list_requests(
    request: Request[Any, Any, Any],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Page[BudgetRequest]:
    """Admins see every request, others their own. Search: the agent's name and the justification."""
    found, page = _LIST.read(request.query_params)
    where = repository.RequestFilter(requester_id=None if user.is_admin else user.user_id, **found)
    rows, total = await repository.list_page(pool, where, page.order_by, page.per_page, page.offset)
    return page_of([to_wire(row) for row in rows], page, total)


@get([_CANONICAL + _ONE, _ALIAS + _ONE])
async def get_request(
    budget_request_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> BudgetRequest:
    """The request with its agent's live figures (``current_budget`` is the one it was filed against)."""
    return to_wire(await _visible(pool, user, budget_request_id))


async def approve_request(
    request: Request[Any, Any, Any],
    budget_request_id: FromPath[str],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> BudgetRequest:
    """Admin: approve and raise the agent's budget in one transaction; a second review is 409."""
    require_admin(user)
    current = await _visible(pool, user, budget_request_id)
    data = decode(body or b"{}", BudgetRequestApprove)  # every field is optional
    approved = None if data.approved_budget is None else grant_micros(data.approved_budget)
    async with pool.acquire() as conn, conn.transaction():
        await service.approve(
            conn,
            audit.actor_of(request, user),
            budget_request_id,
            current.agent_id,
            approved,
            data.review_notes,
        )
        row = await _fresh(conn, budget_request_id)
    return _announced(request, "approved", row)


async def reject_request(
    request: Request[Any, Any, Any],
    budget_request_id: FromPath[str],
    body: RawBody,
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> BudgetRequest:
    """Admin: reject, with notes saying why; a second review is 409."""
    require_admin(user)
    await _visible(pool, user, budget_request_id)
    data = decode(body, BudgetRequestReject)
    async with pool.acquire() as conn, conn.transaction():
        await service.reject(conn, audit.actor_of(request, user), budget_request_id, data.review_notes)
        row = await _fresh(conn, budget_request_id)
    return _announced(request, "rejected", row)


@delete([_CANONICAL + _ONE, _ALIAS + _ONE], status_code=200)
async def cancel_request(
    request: Request[Any, Any, Any],
    budget_request_id: FromPath[str],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> BudgetRequest:
    """The requester or an admin withdraws a pending request; it stays, as ``cancelled``."""
    await _visible(pool, user, budget_request_id)
    if user.role == "viewer":
        raise permission_denied("Viewers cannot cancel budget requests")
    async with pool.acquire() as conn, conn.transaction():
        await service.cancel(conn, audit.actor_of(request, user), budget_request_id)
        row = await _fresh(conn, budget_request_id)
    return _announced(request, "cancelled", row)


_APPROVE_DOC = openapi.doc(body=BudgetRequestApprove, body_required=False)
_REJECT_DOC = openapi.doc(body=BudgetRequestReject)
# One function per review, two routes: PUT on the canonical path, PATCH on the seed's alias.
handlers = [
    create_request,
    list_requests,
    get_request,
    put(f"{_CANONICAL}{_ONE}/approve", opt=_APPROVE_DOC)(approve_request),
    patch(f"{_ALIAS}{_ONE}/approve", opt=_APPROVE_DOC)(approve_request),
    put(f"{_CANONICAL}{_ONE}/reject", opt=_REJECT_DOC)(reject_request),
    patch(f"{_ALIAS}{_ONE}/reject", opt=_REJECT_DOC)(reject_request),
    cancel_request,
]
