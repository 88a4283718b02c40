"""The audit log, read side (admin only): a paginated list and a streamed CSV or JSON export.

Both take the same filters: ``user_id``, ``resource_type``, ``resource_id``,
``operation`` (case-insensitive), ``start_date`` and ``end_date`` (ISO 8601,
both inclusive; a bare date means that whole day, UTC; a time without an
offset is UTC). Entries come newest first.
"""

import csv
import io
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

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
from control_plane.lib.pagination import Page, page_of, page_request
from iron import ids
from iron.timefmt import iso, utcnow

_FORMATS = {"csv": "text/csv", "json": "application/json"}
_COLUMNS = AuditEntry.__struct_fields__
# A spreadsheet runs a cell that starts like a formula; user agents and notes are caller-controlled.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_encoder = msgspec.json.Encoder()

_DATE = "ISO 8601 date or date-time, inclusive; a bare date is that whole day (UTC)"
_FILTERS: dict[str, Any] = {
    "user_id": str,
    "resource_type": str,
    "resource_id": str,
    "operation": Annotated[str, msgspec.Meta(description="e.g. BUDGET_REQUEST_APPROVED (any case)")],
    "start_date": Annotated[str, msgspec.Meta(description=_DATE)],
    "end_date": Annotated[str, msgspec.Meta(description=_DATE)],
}


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


def _moment(query: Mapping[str, str], name: str, errors: dict[str, str], *, end: bool) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        pass
    else:
        return datetime.combine(day, time.max if end else time.min, UTC)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        errors[name] = "Expected an ISO 8601 date or date-time, e.g. 2025-12-10 or 2025-12-10T15:30:00Z"
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _text(query: Mapping[str, str], name: str, longest: int, errors: dict[str, str]) -> str | None:
    value = query.get(name)
    if value is not None and not 1 <= len(value) <= longest:
        errors[name] = f"Must be between 1 and {longest} characters"
    return value


def _filters(query: Mapping[str, str]) -> tuple[AuditFilter, dict[str, str]]:
    """The filters and every error in them, for the caller to report with its own."""
    errors: dict[str, str] = {}
    user_id = query.get("user_id")
    if user_id is not None and not ids.is_valid(ids.USER, user_id):
        errors["user_id"] = f"Expected an id of the form {ids.USER}_<uuid4>"
    resource_type = _text(query, "resource_type", 50, errors)
    resource_id = _text(query, "resource_id", 100, errors)
    operation = _text(query, "operation", 100, errors)
    start = _moment(query, "start_date", errors, end=False)
    end = _moment(query, "end_date", errors, end=True)
    if start and end and start > end:
        errors["end_date"] = "Must not be before start_date"
    where = AuditFilter(
        user_id=user_id,
        resource_type=resource_type,
        resource_id=resource_id,
        operation=operation.upper() if operation else None,
        start=start,
        end=end,
    )
    return where, errors


@get("/api/v1/audit-logs", opt=openapi.doc(query=_FILTERS))
async def list_audit_logs(
    request: Request[Any, Any, Any],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Page[AuditEntry]:
    require_admin(user)
    query = request.query_params
    where, errors = _filters(query)
    page = page_request(query, repository.SORTABLE, "-timestamp", errors)
    rows, total = await repository.list_page(pool, where, page.order_by, page.per_page, page.offset)
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


@get("/api/v1/audit-logs/export", opt=openapi.doc(query={**_FILTERS, "format": Literal["csv", "json"]}))
async def export_audit_logs(
    request: Request[Any, Any, Any],
    user: NamedDependency[UserPrincipal],
    pool: NamedDependency[asyncpg.Pool],
) -> Stream:
    """``format=csv`` (default) or ``json`` (an array); streamed, so its size is not bounded by memory."""
    require_admin(user)
    query = request.query_params
    where, errors = _filters(query)
    fmt = query.get("format", "csv")
    if fmt not in _FORMATS:
        errors["format"] = "Must be one of " + ", ".join(_FORMATS)
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
