"""Write audit entries. Call :func:`record` inside the transaction of the change it describes,
so a change and its entry commit or roll back together: exactly one entry per mutation.

Secrets never reach the log: any field whose name says it holds one is replaced
by ``[REDACTED]``, however deep it sits.
"""

from dataclasses import dataclass
from typing import Any

import orjson
from litestar import Request

from control_plane.auth.principals import UserPrincipal
from control_plane.lib.db import Conn
from control_plane.lib.request_id import request_id_of
from iron import ids

REDACTED = "[REDACTED]"
# A field is secret if its name ends with one of these ("ic_token", "new_password", "credentials"),
# so that a count like "tokens_revoked" stays readable.
_SECRET_ENDINGS = ("password", "token", "secret", "api_key", "credentials", "key_ciphertext", "authorization")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it, from where; ``user_id`` is None for the system (e.g. the lease sweeper)."""

    user_id: str | None
    role: str | None
    ip_address: str | None
    user_agent: str | None
    request_id: str | None


def actor_of(request: Request[Any, Any, Any], user: UserPrincipal | None) -> Actor:
    client = request.client.host if request.client else None
    return Actor(
        user_id=user.user_id if user else None,
        role=user.role if user else None,
        ip_address=client,
        user_agent=(request.headers.get("user-agent") or "")[:500] or None,
        request_id=request_id_of(request.scope),
    )


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if k.lower().endswith(_SECRET_ENDINGS) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


async def record(
    conn: Conn,
    actor: Actor,
    operation: str,
    resource_type: str,
    resource_id: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Insert one entry; ``before``/``after`` for updates. Returns the entry's id."""
    entry_id = ids.new_id(ids.AUDIT)
    changes = (
        {"before": redact(before), "after": redact(after)}
        if before is not None or after is not None
        else None
    )
    await conn.execute(
        "INSERT INTO audit_logs (id, operation, resource_type, resource_id, user_id, user_role,"
        " ip_address, user_agent, request_id, changes, metadata)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb)",
        entry_id,
        operation,
        resource_type,
        resource_id,
        actor.user_id,
        actor.role,
        actor.ip_address,
        actor.user_agent,
        actor.request_id,
        orjson.dumps(changes).decode() if changes is not None else None,
        orjson.dumps(redact(metadata)).decode() if metadata is not None else None,
    )
    return entry_id
