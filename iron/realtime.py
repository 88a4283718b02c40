"""Wire types of the ``/ws`` feed: one definition, used by the control plane, the tests and the benchmark.

The client's first message is :class:`Auth`; every message the server sends is
one JSON object with ``type`` and ``timestamp`` (ISO 8601 UTC). Money is USD, as
in the REST API: budgets and totals to 2 places, a call's cost to 6.
"""

from typing import Annotated, Literal

import msgspec

# Close codes (4000-4999 are the application's): the reason travels in an ERROR message first.
CLOSE_BAD_MESSAGE = 4400  # the first message was not a valid auth message
CLOSE_UNAUTHORIZED = 4401  # bad, expired or revoked token; suspended or deleted user
CLOSE_FORBIDDEN = 4403  # an IC token: the feed is for users
CLOSE_AUTH_TIMEOUT = 4408  # no auth message in time
CLOSE_TOO_SLOW = 4429  # the client read too slowly and its backlog overflowed
# The protocol's own "try again later" (RFC 6455 registry): too many connection attempts or failed
# handshakes from this address. A client reconnects with backoff, as after any other drop.
CLOSE_RATE_LIMITED = 1013


class Auth(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: Literal["auth"]
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class AgentState(msgspec.Struct, kw_only=True):
    """An agent's ledger as the dashboard draws it."""

    id: str
    name: str
    owner_id: str
    status: str
    budget: float
    spent: float
    outstanding: float
    remaining: float
    percent_used: float


class Message(msgspec.Struct, kw_only=True, tag_field="type"):
    timestamp: str


class StateUpdate(Message, tag="STATE_UPDATE"):
    """On connect: every agent the client may read (``total`` counts beyond the snapshot's limit)."""

    agents: list[AgentState]
    total: int


class AgentEvent(Message, tag="AGENT_EVENT"):
    """One LLM call, counted once; ``agent`` is the ledger after it was charged."""

    agent_id: str
    event_id: str
    model: str
    provider: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    status: str
    agent: AgentState


AlertLevel = Literal["warning", "critical", "exhausted"]


class CostAlert(Message, tag="COST_ALERT"):
    """Spent crossed ``threshold_percent`` of the budget: once per crossing."""

    agent_id: str
    level: AlertLevel
    threshold_percent: int
    agent: AgentState


RequestAction = Literal["created", "approved", "rejected", "cancelled"]
LeaseAction = Literal["granted", "refused", "returned", "expired"]


class BudgetRequestEvent(Message, tag="BUDGET_REQUEST"):
    action: RequestAction
    request_id: str
    agent_id: str
    status: str
    requested_budget: float
    approved_budget: float | None
    agent: AgentState


class LeaseEvent(Message, tag="LEASE"):
    """``amount`` is what was granted (granted), asked for (refused) or given back (returned, expired)."""

    action: LeaseAction
    agent_id: str
    lease_id: str | None
    amount: float
    agent: AgentState


AgentAction = Literal["created", "updated", "budget_changed", "deleted"]


class AgentUpdated(Message, tag="AGENT_UPDATED"):
    """Someone changed the agent itself (not its spending): ``agent`` is it after the change.

    ``deleted``: the agent is gone (``agent`` is its last state). ``updated`` with an ``owner_id``
    that is not the reader's: the agent went to another owner, and this reader no longer sees it.
    """

    action: AgentAction
    agent_id: str
    agent: AgentState


class Heartbeat(Message, tag="HEARTBEAT"):
    pass


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    code: str
    message: str
    fields: dict[str, str] | None = None


class Error(Message, tag="ERROR"):
    """Sent just before the server closes the socket, saying why."""

    error: ErrorBody


ServerMessage = (
    StateUpdate | AgentEvent | CostAlert | BudgetRequestEvent | LeaseEvent | AgentUpdated | Heartbeat | Error
)

encode = msgspec.json.Encoder().encode
decode_server_message = msgspec.json.Decoder(ServerMessage).decode
