"""Lists: ``page``, ``per_page``, ``sort`` from an allow-list, and the ``{data, pagination}`` shape.

Query values are read as raw strings so that every bad parameter is reported
at once, in our error format, before any SQL runs.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

from control_plane.lib.errors import validation_error

T = TypeVar("T")

_MAX_OFFSET = 2**62
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 100


@dataclass(frozen=True, slots=True)
class PageRequest:
    page: int
    per_page: int
    order_by: str  # a trusted SQL fragment, taken from the allow-list

    @property
    def offset(self) -> int:
        """Capped where PostgreSQL's OFFSET ends: any page that far is past the end, so empty."""
        return min((self.page - 1) * self.per_page, _MAX_OFFSET)


class Pagination(msgspec.Struct, kw_only=True):
    page: int
    per_page: int
    total: int
    total_pages: int


class Page(msgspec.Struct, Generic[T], kw_only=True):
    data: list[T]
    pagination: Pagination


def _positive_int(raw: str | None, default: int) -> int | None:
    if raw is None:
        return default
    return int(raw) if raw.isdigit() else None


def page_request(
    query: Mapping[str, str],
    sortable: Mapping[str, str],
    default_sort: str,
    errors: dict[str, str] | None = None,
    tiebreak: str = "id",
) -> PageRequest:
    """Validate paging and sorting; ``sortable`` maps a public field to its SQL column,
    ``tiebreak`` names a unique column so that pages never overlap.

    ``errors`` may carry the caller's own filter errors, so they are reported together.
    """
    errors = dict(errors or {})
    page = _positive_int(query.get("page"), 1)
    if page is None or page < 1:
        errors["page"] = "Must be an integer >= 1"
    per_page = _positive_int(query.get("per_page"), DEFAULT_PER_PAGE)
    if per_page is None or not 1 <= per_page <= MAX_PER_PAGE:
        errors["per_page"] = f"Must be an integer between 1 and {MAX_PER_PAGE}"
    sort = query.get("sort") or default_sort
    field = sort.removeprefix("-")
    if field not in sortable:
        errors["sort"] = "Must be one of " + ", ".join(f"{name}, -{name}" for name in sortable)
    if errors:
        raise validation_error(errors, "Invalid list parameters")
    assert page is not None
    assert per_page is not None
    direction = "DESC" if sort.startswith("-") else "ASC"
    return PageRequest(page, per_page, f"{sortable[field]} {direction}, {tiebreak} {direction}")


def page_of(data: list[T], request: PageRequest, total: int) -> Page[T]:
    return Page(
        data=data,
        pagination=Pagination(
            page=request.page,
            per_page=request.per_page,
            total=total,
            total_pages=-(-total // request.per_page),
        ),
    )


def contains_pattern(search: str) -> str:
    """A case-insensitive ``contains`` for ILIKE, with the user's wildcards taken literally."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
