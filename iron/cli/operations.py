"""The command table: one entry per user-facing API operation, and nothing else decides what exists.

``iron <resource> <action>`` calls ``method path``. Path parameters become arguments, query
parameters options, and the body's fields options generated from the server's own request type
(``body``), so a field added to the API's struct appears in the CLI with no change here. A list's
filters are written here: the server declares them next to its handlers, which the CLI must not
import (litestar, asyncpg), so choices come from the schemas where those name them. The parity
test (tests/cli) checks this table against the OpenAPI document the control plane serves.
"""

from dataclasses import dataclass
from typing import get_args

import msgspec

from control_plane.agents.schemas import AgentCreate, AgentProvidersUpdate, AgentUpdate
from control_plane.analytics.periods import PERIODS, Bucket
from control_plane.api_tokens.schemas import ApiTokenCreate
from control_plane.budget.schemas import BudgetUpdate
from control_plane.projects.schemas import ProjectCreate, ProjectUpdate
from control_plane.providers.schemas import ProviderCreate, ProviderStatus, ProviderType, ProviderUpdate
from control_plane.requests.schemas import (
    STATUSES,
    BudgetRequestApprove,
    BudgetRequestCreate,
    BudgetRequestReject,
)
from control_plane.tokens.schemas import IcTokenCreate
from control_plane.users.schemas import ROLES, PasswordReset, RoleChange, UserCreate


@dataclass(frozen=True, slots=True)
class Query:
    """A query parameter: ``--name`` (underscores as dashes), free text or one of ``choices``."""

    name: str
    choices: tuple[str, ...] = ()
    help: str = ""
    integer: bool = False


@dataclass(frozen=True, slots=True)
class Op:
    resource: str
    action: str
    method: str
    path: str  # with {placeholders}, each an argument in order
    summary: str
    body: type[msgspec.Struct] | None = None
    query: tuple[Query, ...] = ()
    paged: bool = False  # takes page, per_page and sort
    rows: str = "data"  # the response's list to show as a table, when it has one
    columns: tuple[str, ...] = ()  # of that table; default: every field of the first row
    download: bool = False  # the body is a file to save (streamed, with progress), not to render


PAGE: tuple[Query, ...] = (
    Query("page", help="Page number, from 1", integer=True),
    Query("per_page", help="Items per page, 1-100 (default 50)", integer=True),
    Query("sort", help="A sortable field, '-' first for descending"),
)


def _search(where: str) -> Query:
    return Query("search", help=f"Case-insensitive contains, on {where}")


_AUDIT_FILTERS = (
    Query("user_id"),
    Query("resource_type", help="e.g. agent, provider, user, budget_request"),
    Query("resource_id"),
    Query("operation", help="e.g. BUDGET_REQUEST_APPROVED (any case)"),
    Query("start_date", help="ISO 8601 date or date-time, inclusive"),
    Query("end_date", help="ISO 8601 date or date-time, inclusive"),
)

_ANALYTICS_FILTERS = (
    Query("period", PERIODS, help="Calendar period in UTC (default last-30-days)"),
    Query("from", help="Start, inclusive (ISO 8601, UTC unless it has an offset); instead of --period"),
    Query("to", help="End, exclusive (ISO 8601; default now); with --from"),
    Query("agent_id"),
    Query("provider_id"),
    Query("project_id"),
)

_AGENT = "/api/v1/agents/{agent_id}"
_PROVIDER = "/api/v1/providers/{provider_id}"
_USER = "/api/v1/users/{user_id}"
_API_TOKEN = "/api/v1/api-tokens/{token_id}"  # noqa: S105 - a path
_IC_TOKEN = "/api/v1/tokens/{token_id}"  # noqa: S105 - a path
_PROJECT = "/api/v1/projects/{project_id}"
_REQUEST = "/api/v1/budget-requests/{budget_request_id}"
_ANALYTICS = "/api/v1/analytics"

RESOURCES: dict[str, str] = {
    "agents": "Agents: their budgets, providers and status.",
    "providers": "LLM providers and their keys (admins write).",
    "users": "Users and their roles (admin only).",
    "api-tokens": "Your API tokens, for scripts (apitok_...).",
    "ic-tokens": "Agents' IC tokens, by token or by agent.",
    "projects": "Projects that group agents.",
    "limits": "Agents' budgets, as admins set them.",
    "budget-requests": "Requests to change an agent's budget, and their review.",
    "analytics": "Spending and usage, per agent, provider and model.",
    "audit-logs": "Who changed what (admin only).",
}


def _analytics(action: str, path: str, summary: str, *extra: Query, paged: bool = False) -> Op:
    return Op(
        "analytics",
        action,
        "GET",
        f"{_ANALYTICS}/{path}",
        summary,
        query=(*_ANALYTICS_FILTERS, *extra),
        paged=paged,
    )


OPERATIONS: tuple[Op, ...] = (
    # agents
    Op(
        "agents",
        "list",
        "GET",
        "/api/v1/agents",
        "List agents (admins see all, others their own).",
        query=(Query("status", ("active",)), Query("project_id"), _search("name and description")),
        paged=True,
        columns=("id", "name", "budget", "spent", "remaining", "status"),
    ),
    Op(
        "agents",
        "create",
        "POST",
        "/api/v1/agents",
        "Create an agent; its IC token is shown once.",
        AgentCreate,
    ),
    Op("agents", "get", "GET", _AGENT, "Show an agent."),
    Op(
        "agents",
        "update",
        "PUT",
        _AGENT,
        "Change an agent's name, description, tags or project.",
        AgentUpdate,
    ),
    Op("agents", "delete", "DELETE", _AGENT, "Delete an agent: its token and open leases end."),
    Op(
        "agents",
        "list-providers",
        "GET",
        f"{_AGENT}/providers",
        "List an agent's providers (the first is its default).",
        rows="providers",
        columns=("id", "name", "type", "endpoint", "status"),
    ),
    Op(
        "agents",
        "assign-providers",
        "PUT",
        f"{_AGENT}/providers",
        "Replace an agent's providers, in order (the first is the default).",
        AgentProvidersUpdate,
        rows="providers",
        columns=("id", "name", "type", "endpoint", "status"),
    ),
    Op(
        "agents",
        "remove-provider",
        "DELETE",
        f"{_AGENT}/providers/{{provider_id}}",
        "Remove one provider from an agent.",
    ),
    Op("agents", "status", "GET", f"{_AGENT}/status", "Show an agent's money, requests and open leases."),
    # providers
    Op(
        "providers",
        "list",
        "GET",
        "/api/v1/providers",
        "List providers.",
        query=(
            Query("type", get_args(ProviderType)),
            Query("status", get_args(ProviderStatus)),
            _search("the name"),
        ),
        paged=True,
        columns=("id", "name", "type", "endpoint", "status", "created_at"),
    ),
    Op("providers", "create", "POST", "/api/v1/providers", "Add a provider and its API key.", ProviderCreate),
    Op("providers", "get", "GET", _PROVIDER, "Show a provider and its usage."),
    Op("providers", "update", "PUT", _PROVIDER, "Change a provider (or its key).", ProviderUpdate),
    Op("providers", "delete", "DELETE", _PROVIDER, "Delete a provider; agents using it lose it."),
    # users
    Op(
        "users",
        "list",
        "GET",
        "/api/v1/users",
        "List users.",
        query=(Query("role", ROLES), Query("status", ("active", "suspended")), _search("email and name")),
        paged=True,
        columns=("id", "email", "name", "role", "status", "created_at"),
    ),
    Op(
        "users",
        "create",
        "POST",
        "/api/v1/users",
        "Create a user (without --password the server picks one and shows it once).",
        UserCreate,
    ),
    Op("users", "get", "GET", _USER, "Show a user."),
    Op("users", "delete", "DELETE", _USER, "Delete a user."),
    Op("users", "suspend", "PUT", f"{_USER}/suspend", "Suspend a user: their tokens stop working."),
    Op("users", "activate", "PUT", f"{_USER}/activate", "Re-activate a suspended user."),
    Op("users", "set-role", "PUT", f"{_USER}/role", "Change a user's role.", RoleChange),
    Op(
        "users",
        "reset-password",
        "POST",
        f"{_USER}/reset-password",
        "Set a user's password (without --password the server picks one and shows it once).",
        PasswordReset,
    ),
    # API tokens
    Op(
        "api-tokens",
        "list",
        "GET",
        "/api/v1/api-tokens",
        "List your API tokens (admins: everyone's, or --user-id's).",
        query=(
            Query("user_id"),
            Query("status", ("active", "revoked", "expired")),
            _search("the name"),
        ),
        paged=True,
        columns=("id", "name", "status", "created_at", "last_used_at", "expires_at"),
    ),
    Op(
        "api-tokens",
        "create",
        "POST",
        "/api/v1/api-tokens",
        "Create an API token; shown once.",
        ApiTokenCreate,
    ),
    Op("api-tokens", "get", "GET", _API_TOKEN, "Show an API token (never its value)."),
    Op("api-tokens", "revoke", "DELETE", _API_TOKEN, "Revoke an API token."),
    Op("api-tokens", "rotate", "POST", f"{_API_TOKEN}/rotate", "Replace an API token's value; shown once."),
    # IC tokens, by token
    Op(
        "ic-tokens",
        "list",
        "GET",
        "/api/v1/tokens",
        "List IC tokens.",
        query=(Query("agent_id"), Query("status", ("active", "revoked")), _search("the agent's name")),
        paged=True,
        columns=("id", "agent_id", "agent_name", "status", "created_at"),
    ),
    Op(
        "ic-tokens",
        "create",
        "POST",
        "/api/v1/tokens",
        "Issue an agent's IC token; shown once.",
        IcTokenCreate,
    ),
    Op("ic-tokens", "get", "GET", _IC_TOKEN, "Show an IC token (never its value)."),
    Op("ic-tokens", "delete", "DELETE", _IC_TOKEN, "Revoke an IC token at once."),
    Op(
        "ic-tokens", "rotate", "PUT", f"{_IC_TOKEN}/rotate", "Replace an IC token; the old one stops at once."
    ),
    # IC tokens, by agent
    Op("ic-tokens", "agent-get", "GET", f"{_AGENT}/ic-token", "Show an agent's IC token (never its value)."),
    Op(
        "ic-tokens",
        "agent-create",
        "POST",
        f"{_AGENT}/ic-token",
        "Issue an IC token for an agent; shown once.",
    ),
    Op("ic-tokens", "agent-delete", "DELETE", f"{_AGENT}/ic-token", "Revoke an agent's IC token."),
    Op(
        "ic-tokens",
        "regenerate",
        "POST",
        f"{_AGENT}/ic-token/regenerate",
        "Replace an agent's IC token; the old one stops at once.",
    ),
    # projects
    Op(
        "projects",
        "list",
        "GET",
        "/api/v1/projects",
        "List projects.",
        query=(_search("the name"),),
        paged=True,
        columns=("id", "name", "agent_count", "budget", "spent", "created_at"),
    ),
    Op("projects", "create", "POST", "/api/v1/projects", "Create a project (admin).", ProjectCreate),
    Op("projects", "get", "GET", _PROJECT, "Show a project."),
    Op("projects", "update", "PUT", _PROJECT, "Change a project (admin).", ProjectUpdate),
    # budget limits
    Op(
        "limits",
        "set",
        "PUT",
        "/api/v1/limits/agents/{agent_id}/budget",
        "Set an agent's budget (admin; lowering it needs --force).",
        BudgetUpdate,
    ),
    Op(
        "limits",
        "history",
        "GET",
        "/api/v1/limits/agents/{agent_id}/budget/history",
        "Show the changes of an agent's budget.",
        columns=("id", "old_budget", "new_budget", "changed_by", "reason", "created_at"),
    ),
    # budget requests
    Op(
        "budget-requests",
        "create",
        "POST",
        "/api/v1/budget-requests",
        "Ask for a new budget for an agent.",
        BudgetRequestCreate,
    ),
    Op(
        "budget-requests",
        "list",
        "GET",
        "/api/v1/budget-requests",
        "List budget requests (admins see all, others their own).",
        query=(
            Query("status", STATUSES),
            Query("agent_id"),
            _search("the agent's name and the justification"),
        ),
        paged=True,
        columns=(
            "id",
            "agent_name",
            "current_budget",
            "requested_budget",
            "status",
            "requester_name",
            "created_at",
        ),
    ),
    Op("budget-requests", "get", "GET", _REQUEST, "Show a budget request."),
    Op(
        "budget-requests",
        "approve",
        "PUT",
        f"{_REQUEST}/approve",
        "Approve a request (admin); the agent's budget changes at once.",
        BudgetRequestApprove,
    ),
    Op(
        "budget-requests",
        "reject",
        "PUT",
        f"{_REQUEST}/reject",
        "Reject a request (admin).",
        BudgetRequestReject,
    ),
    Op("budget-requests", "cancel", "DELETE", _REQUEST, "Cancel a pending request (requester or admin)."),
    # analytics
    _analytics("spending-total", "spending/total", "Total spending."),
    _analytics("spending-by-agent", "spending/by-agent", "Spending per agent.", paged=True),
    _analytics("spending-by-provider", "spending/by-provider", "Spending per provider.", paged=True),
    _analytics("spending-avg-per-request", "spending/avg-per-request", "Average cost per request."),
    _analytics(
        "spending-timeseries",
        "spending/timeseries",
        "Spending over time.",
        Query("bucket", get_args(Bucket), help="Point width (default day)"),
    ),
    _analytics("budget-status", "budget/status", "Budgets against spending, per agent.", paged=True),
    _analytics("usage-requests", "usage/requests", "Request counts."),
    _analytics("usage-tokens-by-agent", "usage/tokens/by-agent", "Tokens per agent.", paged=True),
    _analytics("usage-models", "usage/models", "Usage per model.", paged=True),
    _analytics("events", "events", "Usage events, newest first.", paged=True),
    # audit log
    Op(
        "audit-logs",
        "list",
        "GET",
        "/api/v1/audit-logs",
        "List audit entries, newest first (admin).",
        query=_AUDIT_FILTERS,
        paged=True,
        columns=("timestamp", "operation", "resource_type", "resource_id", "user_id", "user_role"),
    ),
    Op(
        "audit-logs",
        "export",
        "GET",
        "/api/v1/audit-logs/export",
        "Export audit entries as CSV or JSON (admin), to a file with --output.",
        query=(*_AUDIT_FILTERS, Query("format", ("csv", "json"))),
        download=True,
    ),
)
