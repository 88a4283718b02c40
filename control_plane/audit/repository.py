"""SQL of the audit log's read side; entries are written by :mod:`control_plane.audit.recorder` only."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from control_plane.lib.db import Executor


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: str
    timestamp: datetime
    operation: str
    resource_type: str
    resource_id: str
    user_id: str | None
    user_role: str | None
    ip_address: str | None
    user_agent: str | None
    request_id: str | None
    changes: str | None  # JSON text, as stored
    metadata: str | None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    user_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    operation: str | None = None
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # inclusive


SORTABLE = {"timestamp": "timestamp"}

_COLUMNS = (
    "id, timestamp, operation, resource_type, resource_id, user_id, user_role, ip_address,"
    " user_agent, request_id, changes::text AS changes, metadata::text AS metadata"
)
_CONDITION = (
    "($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR resource_type = $2)"
    " AND ($3::text IS NULL OR resource_id = $3) AND ($4::text IS NULL OR operation = $4)"
    " AND ($5::timestamptz IS NULL OR timestamp >= $5) AND ($6::timestamptz IS NULL OR timestamp <= $6)"
)


def _args(where: AuditFilter) -> tuple[str | datetime | None, ...]:
    return (where.user_id, where.resource_type, where.resource_id, where.operation, where.start, where.end)


async def list_page(
    conn: Executor, where: AuditFilter, order_by: str, limit: int, offset: int
) -> tuple[list[AuditRow], int]:
    """One page of entries and the total; ``order_by`` comes from :data:`SORTABLE` only."""
    total = await conn.fetchval(f"SELECT count(*) FROM audit_logs WHERE {_CONDITION}", *_args(where))
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM audit_logs WHERE {_CONDITION} ORDER BY {order_by} LIMIT $7 OFFSET $8",
        *_args(where),
        limit,
        offset,
    )
    return [AuditRow(**row) for row in rows], int(total)


async def newest_first(
    conn: Executor, where: AuditFilter, batch: int = 1000
) -> AsyncIterator[list[AuditRow]]:
    """Every matching entry, newest first, in batches.

    Keyset paging on the ``(timestamp, id)`` index, one short query per batch: an
    export of any size holds neither the whole log in memory nor a connection
    (nor a transaction) while a slow client reads.
    """
    before: tuple[datetime, str] = (datetime.max.replace(tzinfo=UTC), "")
    while True:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM audit_logs WHERE {_CONDITION} AND (timestamp, id) < ($7, $8)"
            " ORDER BY timestamp DESC, id DESC LIMIT $9",
            *_args(where),
            *before,
            batch,
        )
        if not rows:
            return
        yield [AuditRow(**row) for row in rows]
        if len(rows) < batch:
            return
        before = (rows[-1]["timestamp"], rows[-1]["id"])
