"""Admins using the REST API (one shared session): browse agents, providers, budget requests and the
audit log, and now and then file a budget request for their own agent and approve it.

Responses are decoded into the control plane's own wire types, so a reply that breaks the
contract under load is an error in the results, not a silent success.
"""

import random
import secrets
from typing import Any, TypeVar

import msgspec
from locust import FastHttpUser, between, task

from bench.locustfiles._common import request
from control_plane.agents.schemas import Agent, AgentCreate, AgentCreated
from control_plane.lib.pagination import Page
from control_plane.providers.schemas import Provider
from control_plane.requests.schemas import BudgetRequest, BudgetRequestApprove, BudgetRequestCreate

T = TypeVar("T")
_JSON = {"Content-Type": "application/json"}


class Admin(FastHttpUser):
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        agent = AgentCreate(name=f"bench-admin-{secrets.token_hex(4)}", budget=100)
        created = self._call("POST", "/api/v1/agents", AgentCreated, agent)
        self.agent_id, self.budget = created.id, created.budget
        self.agent_ids: list[str] = [created.id]
        self.provider_ids: list[str] = []

    def _call(
        self, method: str, path: str, type_: type[T], body: msgspec.Struct | None = None, name: str = ""
    ) -> T:
        content = None if body is None else msgspec.json.encode(body)
        reply = request(self, method, path, name=name or path, data=content, headers=_JSON)
        reply.raise_for_status()
        return msgspec.json.decode(reply.content, type=type_)

    def _get(self, path: str, type_: type[T], name: str = "") -> T:
        return self._call("GET", path, type_, name=name)

    @task(4)
    def list_agents(self) -> None:
        page = self._get("/api/v1/agents?per_page=50", Page[Agent], "/api/v1/agents")
        self.agent_ids = [agent.id for agent in page.data] or self.agent_ids

    @task(3)
    def get_agent(self) -> None:
        self._get(f"/api/v1/agents/{random.choice(self.agent_ids)}", Agent, "/api/v1/agents/{id}")

    @task(2)
    def list_providers(self) -> None:
        page = self._get("/api/v1/providers?per_page=50", Page[Provider], "/api/v1/providers")
        self.provider_ids = [provider.id for provider in page.data]

    @task(1)
    def get_provider(self) -> None:
        if self.provider_ids:
            path = f"/api/v1/providers/{random.choice(self.provider_ids)}"
            self._get(path, Provider, "/api/v1/providers/{id}")

    @task(2)
    def audit_log(self) -> None:
        # AuditEntry carries the stored JSON as msgspec.Raw, which encodes but does not decode
        self._get("/api/v1/audit-logs?per_page=50", Page[dict[str, Any]], "/api/v1/audit-logs")

    @task(1)
    def list_budget_requests(self) -> None:
        self._get("/api/v1/budget-requests?per_page=50", Page[BudgetRequest], "/api/v1/budget-requests")

    @task(1)
    def raise_budget(self) -> None:
        """File a request for one dollar more on the user's own agent, then approve it."""
        ask = BudgetRequestCreate(
            agent_id=self.agent_id,
            requested_budget=self.budget + 1,
            justification="load test: a routine top-up of the agent's budget",
        )
        filed = self._call("POST", "/api/v1/budget-requests", BudgetRequest, ask)
        approve = BudgetRequestApprove(review_notes="approved by the load test")
        path = f"/api/v1/budget-requests/{filed.id}/approve"
        approved = self._call("PUT", path, BudgetRequest, approve, "/api/v1/budget-requests/{id}/approve")
        self.budget = approved.approved_budget or self.budget
