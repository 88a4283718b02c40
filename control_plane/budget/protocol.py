"""The budget protocol: the agent side of the bank, authenticated by IC token.

Canonical paths under ``/api/v1/budget``; the seed's paths are aliases.
"""

from typing import Any

import asyncpg
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import RawBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from control_plane.analytics import service as analytics
from control_plane.analytics.repository import UsageRow
from control_plane.auth.principals import current_agent
from control_plane.budget import service
from control_plane.lib.errors import not_found, validation_error
from control_plane.providers import repository as providers
from control_plane.realtime import publisher
from iron.crypto import encrypt_ip_token, unseal
from iron.money import charge_micros, grant_micros, usd
from iron.protocol import (
    BatchReportResponse,
    HandshakeRequest,
    HandshakeResponse,
    ProviderInfo,
    ProviderKeyResponse,
    RefreshRequest,
    RefreshResponse,
    ReturnRequest,
    ReturnResponse,
    Usage,
    UsageBatch,
    UsageReport,
)
from iron.timefmt import iso
from iron.validation import decode, has_field


def _ttl(request: Request[Any, Any, Any]) -> int:
    return int(request.app.state.settings.lease_ttl_s)


def _usage_row(usage: Usage) -> UsageRow:
    return UsageRow(
        event_id=usage.request_id,
        cost=charge_micros(usage.cost_usd),
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        model=usage.model,
        provider=usage.provider,
        status=usage.status,
        latency_ms=usage.latency_ms,
        occurred_at=usage.timestamp,
    )


@post(["/api/v1/budget/handshake", "/api/budget/handshake", "/api/v1/auth/handshake"], status_code=200)
async def handshake(
    request: Request[Any, Any, Any], body: RawBody, pool: NamedDependency[asyncpg.Pool]
) -> HandshakeResponse:
    agent = await current_agent(request, body)
    data = decode(body or b"{}", HandshakeRequest)  # every field has a default
    sealed = await providers.for_agent(pool, agent.agent_id, data.provider)
    if data.provider is not None and sealed is None:
        raise validation_error({"provider": "No such provider is assigned to this agent"})
    result = await service.handshake(
        pool,
        agent.agent_id,
        grant_micros(data.requested_budget),
        data.runtime_id,
        _ttl(request),
        publisher.of(request.app.state),
    )
    ip_token = provider = None
    if sealed is not None:
        key = unseal(
            request.app.state.settings.master_key,
            sealed.key_ciphertext,
            sealed.provider.id.encode(),
        )
        ip_token = encrypt_ip_token(agent.token, key.decode())
        provider = ProviderInfo(
            id=sealed.provider.id, type=sealed.provider.type, base_url=sealed.provider.endpoint
        )
    return HandshakeResponse(
        agent_id=agent.agent_id,
        lease_id=result.lease.id,
        ip_token=ip_token,
        budget_granted=usd(result.granted),
        budget_remaining=usd(result.available),
        lease_granted=usd(result.lease.granted),
        expires_at=iso(result.lease.expires_at),
        provider=provider,
    )


async def _report(
    request: Request[Any, Any, Any], pool: asyncpg.Pool, agent_id: str, lease_id: str, rows: list[UsageRow]
) -> service.Charged:
    charged = await service.report(pool, agent_id, lease_id, rows, _ttl(request))
    if charged.new:
        accepted = analytics.Accepted(agent_id, charged.new, charged.before, charged.ledger)
        await analytics.events_accepted(request.app.state, accepted)
    return charged


@post(["/api/v1/budget/report", "/api/budget/report"], status_code=200)
async def report(
    request: Request[Any, Any, Any], body: RawBody, pool: NamedDependency[asyncpg.Pool]
) -> Response[Any]:
    """One usage (204) or a batch ``{lease_id, reports: [...]}`` (200 with counts)."""
    agent = await current_agent(request, body)
    if not has_field(body, "reports"):
        single = decode(body, UsageReport)
        await _report(request, pool, agent.agent_id, single.lease_id, [_usage_row(single)])
        return Response(content=None, status_code=HTTP_204_NO_CONTENT)
    batch = decode(body, UsageBatch)
    rows = [_usage_row(usage) for usage in batch.reports]
    charged = await _report(request, pool, agent.agent_id, batch.lease_id, rows)
    state = charged.ledger
    return Response(
        BatchReportResponse(
            accepted=charged.accepted,
            duplicates=charged.duplicates,
            lease_spent=usd(charged.lease.spent, 6),
            budget_remaining=usd(state.budget - state.spent - state.outstanding),
            budget_limit=usd(state.budget),
        )
    )


@post(["/api/v1/budget/refresh", "/api/budget/refresh"], status_code=200)
async def refresh(
    request: Request[Any, Any, Any], body: RawBody, pool: NamedDependency[asyncpg.Pool]
) -> RefreshResponse:
    agent = await current_agent(request, body)
    data = decode(body, RefreshRequest)
    result = await service.refresh(
        pool,
        agent.agent_id,
        data.lease_id,
        grant_micros(data.requested_budget),
        _ttl(request),
        publisher.of(request.app.state),
    )
    return RefreshResponse(
        lease_id=result.lease.id,
        budget_granted=usd(result.granted),
        budget_remaining=usd(result.available),
        lease_granted=usd(result.lease.granted),
        lease_spent=usd(result.lease.spent, 6),
        expires_at=iso(result.lease.expires_at),
    )


@post(["/api/v1/budget/return", "/api/budget/return"], status_code=200)
async def return_lease(
    request: Request[Any, Any, Any], body: RawBody, pool: NamedDependency[asyncpg.Pool]
) -> ReturnResponse:
    agent = await current_agent(request, body)
    data = decode(body, ReturnRequest)
    result = await service.return_lease(pool, agent.agent_id, data.lease_id, publisher.of(request.app.state))
    return ReturnResponse(
        lease_id=data.lease_id,
        returned=usd(result.returned, 6),
        budget_remaining=usd(result.available),
    )


@post("/api/v1/agents/provider-key", status_code=200)
async def provider_key(
    request: Request[Any, Any, Any], body: RawBody, pool: NamedDependency[asyncpg.Pool]
) -> ProviderKeyResponse:
    agent = await current_agent(request, body)
    sealed = await providers.for_agent(pool, agent.agent_id)
    if sealed is None:
        raise not_found("Provider assignment", agent_id=agent.agent_id)
    key = unseal(request.app.state.settings.master_key, sealed.key_ciphertext, sealed.provider.id.encode())
    return ProviderKeyResponse(
        provider=sealed.provider.type,
        provider_id=sealed.provider.id,
        api_key=key.decode(),
        base_url=sealed.provider.endpoint,
    )


handlers = [handshake, report, refresh, return_lease, provider_key]
