"""Query filters of list endpoints, checked and documented the same way everywhere.

Each filter reads one parameter and records a bad value in ``errors`` instead of
raising, so that a list reports every bad parameter of a request at once; each
also names its OpenAPI schema, so the document says exactly what it accepts.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal, Protocol

import msgspec

from control_plane.lib.pagination import contains_pattern
from iron import ids

MAX_SEARCH = 200


class Filter(Protocol):
    @property
    def schema(self) -> Any:
        """The parameter's type, for the OpenAPI document."""

    def read(self, query: Mapping[str, str], name: str, errors: dict[str, str]) -> Any:
        """The parameter's value (None when absent or bad; a bad one is recorded in ``errors``)."""


@dataclass(frozen=True, slots=True)
class OneOf:
    choices: tuple[str, ...]

    @property
    def schema(self) -> Any:
        return Literal.__getitem__(self.choices)

    def read(self, query: Mapping[str, str], name: str, errors: dict[str, str]) -> str | None:
        value = query.get(name)
        if value is not None and value not in self.choices:
            errors[name] = "Must be one of " + ", ".join(self.choices)
            return None
        return value


@dataclass(frozen=True, slots=True)
class IdOf:
    prefix: str

    @property
    def schema(self) -> Any:
        return Annotated[str, msgspec.Meta(pattern=ids.pattern(self.prefix))]

    def read(self, query: Mapping[str, str], name: str, errors: dict[str, str]) -> str | None:
        value = query.get(name)
        if value is not None and not ids.is_valid(self.prefix, value):
            errors[name] = f"Expected an id of the form {self.prefix}_<uuid4>"
            return None
        return value


@dataclass(frozen=True, slots=True)
class Search:
    """``search``: a case-insensitive contains, read as an ILIKE pattern."""

    @property
    def schema(self) -> Any:
        return Annotated[str, msgspec.Meta(max_length=MAX_SEARCH, description="Case-insensitive contains")]

    def read(self, query: Mapping[str, str], name: str, errors: dict[str, str]) -> str | None:
        value = query.get(name)
        if value is not None and len(value) > MAX_SEARCH:
            errors[name] = f"At most {MAX_SEARCH} characters"
            return None
        return contains_pattern(value) if value else None


@dataclass(frozen=True, slots=True)
class Text:
    """An exact value of at most ``longest`` characters."""

    longest: int
    description: str = ""

    @property
    def schema(self) -> Any:
        return Annotated[
            str, msgspec.Meta(min_length=1, max_length=self.longest, description=self.description or None)
        ]

    def read(self, query: Mapping[str, str], name: str, errors: dict[str, str]) -> str | None:
        value = query.get(name)
        if value is not None and not 1 <= len(value) <= self.longest:
            errors[name] = f"Must be between 1 and {self.longest} characters"
            return None
        return value


@dataclass(frozen=True, slots=True)
class Moment:
    """An inclusive bound: an ISO 8601 date-time (UTC when it has no offset) or a bare date,
    which stands for the start of that day (UTC) or, with ``end``, its end."""

    end: bool = False

    @property
    def schema(self) -> Any:
        description = "ISO 8601 date or date-time, inclusive; a bare date is that whole day (UTC)"
        return Annotated[str, msgspec.Meta(description=description)]

    def read(self, query: Mapping[str, str], name: str, errors: dict[str, str]) -> datetime | None:
        raw = query.get(name)
        if raw is None:
            return None
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            pass
        else:
            return datetime.combine(day, time.max if self.end else time.min, UTC)
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            errors[name] = "Expected an ISO 8601 date or date-time, e.g. 2025-12-10 or 2025-12-10T15:30:00Z"
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


SEARCH: Filter = Search()
