"""Query parameters of the analytics queries, checked all at once (errors go to ``errors``).

A period is a name (:data:`periods.PERIODS`, default ``last-30-days``) or ``from`` (and
optionally ``to``, default now): ISO 8601 times, UTC unless they carry an offset.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from control_plane.analytics import periods
from control_plane.analytics.periods import Bucket
from control_plane.lib import filters
from iron import ids
from iron.timefmt import as_utc

DEFAULT_PERIOD: Final = "last-30-days"
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)
#: Buckets a time series may have: 93 days of hours, 10 years of days.
MAX_POINTS: Final[Mapping[str, int]] = {"hour": 93 * 24, "day": 3660}

_TIME_DOC: Final = (
    "ISO 8601, UTC unless it has an offset; instead of period. Before the retention horizon of raw"
    " events (IRON_USAGE_EVENTS_RETENTION_MONTHS), widened to the whole hour; the answer's period"
    " is what was counted"
)
QUERY: Final[Mapping[str, Any]] = {
    "period": Annotated[
        periods.PeriodName, msgspec.Meta(description=f"Calendar period in UTC (default {DEFAULT_PERIOD})")
    ],
    "from": Annotated[datetime, msgspec.Meta(description=f"Start (inclusive), {_TIME_DOC}")],
    "to": Annotated[datetime, msgspec.Meta(description=f"End (exclusive, default now), {_TIME_DOC}")],
    "agent_id": Annotated[str, msgspec.Meta(pattern=ids.pattern(ids.AGENT))],
    "project_id": Annotated[str, msgspec.Meta(pattern=ids.pattern(ids.PROJECT))],
    "provider_id": Annotated[
        str,
        msgspec.Meta(pattern=ids.pattern(ids.PROVIDER), description="Calls labelled with its type or name"),
    ],
}
BUCKET_QUERY: Final[Mapping[str, Any]] = {
    **QUERY,
    "bucket": Annotated[Literal["hour", "day"], msgspec.Meta(description="Point width (default day)")],
}


@dataclass(frozen=True, slots=True)
class Asked:
    """A query's period and filters, as given (not yet resolved against the database)."""

    period: str  # a name of periods.PERIODS, or periods.CUSTOM
    start: datetime | None  # custom periods only
    end: datetime | None
    agent_id: str | None
    project_id: str | None
    provider_id: str | None


def _time(query: Mapping[str, str], name: str, errors: dict[str, str]) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        moment = as_utc(datetime.fromisoformat(raw))
    except ValueError:
        errors[name] = "Expected an ISO 8601 date or time, e.g. 2026-01-31T12:00:00Z"
        return None
    if not EARLIEST <= moment <= LATEST:
        errors[name] = "Must be between 1970 and 2200"
        return None
    return moment


def read(query: Mapping[str, str], now: datetime, errors: dict[str, str]) -> Asked:
    """The period and filters of ``query``; problems are added to ``errors``."""
    errors.update(
        (name, "May not contain NUL characters") for name, value in query.items() if "\x00" in value
    )
    period = filters.OneOf(periods.PERIODS).read(query, "period", errors)
    start, end = _time(query, "from", errors), _time(query, "to", errors)
    if period is not None and ("from" in query or "to" in query):
        errors["period"] = "Give a period or from/to, not both"
    if "to" in query and "from" not in query:  # the parameter given is the one at fault
        errors.setdefault("to", "Needs from")
    if start is not None:
        end = end or now
        if start >= end:
            errors["to"] = "Must be later than from"
    return Asked(
        period=periods.CUSTOM if start is not None else period or DEFAULT_PERIOD,
        start=start,
        end=end,
        agent_id=filters.IdOf(ids.AGENT).read(query, "agent_id", errors),
        project_id=filters.IdOf(ids.PROJECT).read(query, "project_id", errors),
        provider_id=filters.IdOf(ids.PROVIDER).read(query, "provider_id", errors),
    )


def bucket(query: Mapping[str, str], errors: dict[str, str]) -> Bucket:
    chosen = filters.OneOf(("hour", "day")).read(query, "bucket", errors)
    return "hour" if chosen == "hour" else "day"
