"""One declaration per list endpoint: its filters, sortable fields and default order.

A handler reads its query with :meth:`Listing.read` (every bad parameter reported at
once, before any SQL runs) and passes :meth:`Listing.doc` to its route's ``opt``, so
the OpenAPI document lists exactly the parameters the handler reads.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from control_plane.lib import openapi
from control_plane.lib.filters import Filter
from control_plane.lib.pagination import PageRequest, page_request

#: Rules across parameters: the filters' values -> errors by parameter name.
CrossCheck = Callable[[Mapping[str, Any]], Mapping[str, str]]


@dataclass(frozen=True)
class Listing:
    #: Filter parameters by name; a handler's repository filter takes the same names.
    filters: Mapping[str, Filter]
    #: Sortable public fields -> their SQL (trusted: written here, never taken from the query).
    sortable: Mapping[str, str]
    default_sort: str
    #: A unique column, so that rows with equal sort keys never straddle two pages.
    tiebreak: str = "id"
    checks: tuple[CrossCheck, ...] = ()

    def filter_values(self, query: Mapping[str, str], errors: dict[str, str]) -> dict[str, Any]:
        """Every filter's value (None when absent); bad ones are recorded in ``errors``."""
        for name, value in query.items():
            if "\x00" in value:  # PostgreSQL text cannot hold one
                errors[name] = "May not contain NUL characters"
        values = {name: kind.read(query, name, errors) for name, kind in self.filters.items()}
        for check in self.checks:
            errors.update(check(values))
        return values

    def read(self, query: Mapping[str, str]) -> tuple[dict[str, Any], PageRequest]:
        """The filters' values and the page asked for; a 400 naming every bad parameter."""
        errors: dict[str, str] = {}
        values = self.filter_values(query, errors)
        return values, page_request(query, self.sortable, self.default_sort, errors, self.tiebreak)

    def query_doc(self) -> dict[str, Any]:
        """The filter parameters' schemas, by name."""
        return {name: kind.schema for name, kind in self.filters.items()}

    def doc(self) -> dict[str, Any]:
        """For the route's ``opt``: the filters and the sort values this list accepts."""
        return openapi.doc(query={**self.query_doc(), "sort": sort_schema(self.sortable)})


def sort_schema(sortable: Mapping[str, str]) -> Any:
    """``sort``'s schema: each sortable field, ascending or ('-' first) descending."""
    sorts = [f"{sign}{name}" for name in sortable for sign in ("", "-")]
    meta = msgspec.Meta(description="'-' first: descending", extra_json_schema={"enum": sorts})
    return Annotated[str, meta]
