"""Wire types of the audit log's read side."""

import msgspec


class AuditEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One entry as stored; ``changes`` (before/after) and ``metadata`` are the stored JSON, verbatim."""

    id: str
    timestamp: str
    operation: str
    resource_type: str
    resource_id: str
    user_id: str | None = None  # None: the system (e.g. the lease sweeper)
    user_role: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    changes: msgspec.Raw | None = None
    metadata: msgspec.Raw | None = None
