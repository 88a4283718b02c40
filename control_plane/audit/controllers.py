"""The audit log, read side (admin only): a paginated list and a streamed CSV or JSON export.

Both take the same filters: ``user_id``, ``resource_type``, ``resource_id``,
``operation`` (case-insensitive), ``start_date`` and ``end_date`` (ISO 8601,
both inclusive; a bare date means that whole day, UTC; a time without an
offset is UTC). Entries come newest first.
"""

import csv
import io
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import asyncpg
import msgspec
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.response import Stream

from control_plane.audit import repository
from control_plane.audit.repository import AuditFilter, AuditRow
from control_plane.audit.schemas import AuditEntry
from control_plane.auth.principals import UserPrincipal, require_admin
from control_plane.lib import openapi
from control_plane.lib.errors import validation_error
from control_plane.lib.filters import IdOf, Moment, OneOf, Text
from control_plane.lib.listing import Listing
from control_plane.lib.pagination import Page, page_of
from iron import ids
from iron.timefmt import iso, utcnow

_FORMATS = {"csv": "text/csv", "json": "application/json"}
_COLUMNS = AuditEntry.__struct_fields__
# A spreadsheet runs a cell that starts like a formula; user agents and notes are caller-controlled.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_encoder = msgspec.json.Encoder()

_FORMAT = OneOf(tuple(_FORMATS))


def _in_order(found: Mapping[str, Any]) -> dict[str, str]:
    start, end = found["start_date"], found["end_date"]
    return {"end_date": "Must not be before start_date"} if start and end and start > end else {}


_LIST = Listing(
    {
        "user_id": IdOf(ids.USER),
        "resource_type": Text(50),
        "resource_id": Text(100),
        "operation": Text(100, "e.g. BUDGET_REQUEST_APPROVED (any case)"),
        "start_date": Moment(),
        "end_date": Moment(end=True),
    },
    repository.SORTABLE,
    "-timestamp",
    checks=(_in_order,),
)


def to_wire(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        timestamp=iso(row.timestamp),
        operation=row.operation,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        user_id=row.user_id,
        user_role=row.user_role,
        ip_address=row.ip_address,
        user_agent=row.user_agent,
        request_id=row.request_id,
        changes=None if row.changes is None else msgspec.Raw(row.changes),
        metadata=None if row.metadata is None else msgspec.Raw(row.metadata),
    )


def _where(found: Mapping[str, Any]) -> AuditFilter:
    operation = found["operation"]
    return AuditFilter(
        user_id=found["user_id"],
        resource_type=found["resource_type"],
        resource_id=found["resource_id"],
        operation=operation.upper() if operation else None,
        start=found["start_date"],
        end=found["end_date"],
    )


@get("/api/v1/audit-logs", opt=_LIST.doc())
async def list_audit_logs(
    request: Request[Any, Any, Any],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Page[AuditEntry]:
    require_admin(user)
    found, page = _LIST.read(request.query_params)
    rows, total = await repository.list_page(pool, _where(found), page.order_by, page.per_page, page.offset)
    return page_of([to_wire(row) for row in rows], page, total)


def _cell(value: str | None) -> str:
    if value is None:
        return ""
    return f"'{value}" if value.startswith(_FORMULA_START) else value


def _csv_row(row: AuditRow) -> list[str]:
    return [_cell(iso(row.timestamp) if name == "timestamp" else getattr(row, name)) for name in _COLUMNS]


def _csv_text(rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


async def _as_csv(batches: AsyncIterator[list[AuditRow]]) -> AsyncIterator[str]:
    yield _csv_text([_COLUMNS])
    async for rows in batches:
        yield _csv_text(_csv_row(row) for row in rows)


async def _as_json(batches: AsyncIterator[list[AuditRow]]) -> AsyncIterator[bytes]:
    separator = b"["
    async for rows in batches:
        yield separator + b",".join(_encoder.encode(to_wire(row)) for row in rows)
        separator = b","
    yield b"[]" if separator == b"[" else b"]"


@get("/api/v1/audit-logs/export", opt=openapi.doc(query={**_LIST.query_doc(), "format": _FORMAT.schema}))
async def export_audit_logs(
    request: Request[Any, Any, Any],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Stream:
    """``format=csv`` (default) or ``json`` (an array); streamed, so its size is not bounded by memory."""
    require_admin(user)
    query = request.query_params
    errors: dict[str, str] = {}
    where = _where(_LIST.filter_values(query, errors))
    fmt = _FORMAT.read(query, "format", errors) or "csv"
    if errors:
        raise validation_error(errors, "Invalid export parameters")
    batches = repository.newest_first(pool, where)
    filename = f"audit-logs-{utcnow():%Y%m%dT%H%M%SZ}.{fmt}"
    return Stream(
        _as_csv(batches) if fmt == "csv" else _as_json(batches),
        media_type=_FORMATS[fmt],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


handlers = [list_audit_logs, export_audit_logs]
