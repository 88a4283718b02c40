"""Time ranges of analytics queries, all in UTC: named periods, buckets, and how a range
``[start, end)`` splits over the rollup grains so that a query reads few rows.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, get_args

# A dekad is a third of a month: days 1-10, 11-20 and 21 to the end. Each grain nests in the next.
Grain = Literal["hour", "day", "dekad", "month"]
Bucket = Literal["hour", "day"]  # of a time series
GRAINS: Final[tuple[Grain, ...]] = ("hour", "day", "dekad", "month")
PeriodName = Literal[
    "today", "yesterday", "last-7-days", "last-30-days", "this-month", "last-month", "all-time"
]
PERIODS: Final[tuple[str, ...]] = get_args(PeriodName)
ALL_TIME: Final = "all-time"
CUSTOM: Final = "custom"

Range = tuple[datetime, datetime]


def floor(moment: datetime, grain: Grain) -> datetime:
    moment = moment.astimezone(UTC)
    if grain == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "dekad":
        return day.replace(day=min(day.day - 1, 20) // 10 * 10 + 1)
    return day.replace(day=1) if grain == "month" else day


def shift(moment: datetime, grain: Grain, steps: int = 1) -> datetime:
    """``moment`` (a bucket start) moved by ``steps`` buckets."""
    if grain == "hour":
        return moment + timedelta(hours=steps)
    if grain == "day":
        return moment + timedelta(days=steps)
    per_month = 3 if grain == "dekad" else 1
    index = (moment.year * 12 + moment.month - 1) * per_month + (moment.day - 1) // 10 + steps
    months, part = divmod(index, per_month)
    return moment.replace(year=months // 12, month=months % 12 + 1, day=part * 10 + 1)


def ceil(moment: datetime, grain: Grain) -> datetime:
    start = floor(moment, grain)
    return start if start == moment else shift(start, grain)


@dataclass(frozen=True, slots=True)
class Period:
    name: str
    start: datetime
    end: datetime


def named(name: str, now: datetime) -> Period:
    """A calendar period of :data:`PERIODS` but all-time; days and months are whole, so "today" ends
    at midnight."""
    today = floor(now, "day")
    month = floor(now, "month")
    start, end = {
        "today": (today, shift(today, "day")),
        "yesterday": (shift(today, "day", -1), today),
        "last-7-days": (shift(today, "day", -6), shift(today, "day")),
        "last-30-days": (shift(today, "day", -29), shift(today, "day")),
        "this-month": (month, shift(month, "month")),
        "last-month": (shift(month, "month", -1), month),
    }[name]
    return Period(name, start, end)


def all_time(first: datetime | None, last: datetime | None, now: datetime) -> Period:
    """Whole months, from the first event's month to the end of the current month (or of the last
    event's, if later)."""
    end = shift(floor(max(now, last or now), "month"), "month")
    return Period(ALL_TIME, floor(first, "month") if first else floor(now, "month"), end)


def raw_horizon(now: datetime, retention_months: int) -> datetime | None:
    """The earliest moment whose raw events are kept: the start of the month ``retention_months``
    before the current one (None: all are kept). Before it, only the rollups hold usage."""
    return shift(floor(now, "month"), "month", -retention_months) if retention_months else None


def on_rollups(start: datetime, end: datetime, horizon: datetime | None) -> Range:
    """``[start, end)`` with each end that lies before ``horizon`` widened to the whole hour, so
    that no part of the range needs raw events that are no longer kept."""
    if horizon is None:
        return start, end
    return (
        floor(start, "hour") if start < horizon else start,
        ceil(end, "hour") if end < horizon else end,
    )


def split(start: datetime, end: datetime, coarsest: Grain = "month") -> dict[str, list[Range]]:
    """``[start, end)`` as disjoint ranges per source: ``raw`` (the events) for what is not whole
    hours, then hours, days and months up to ``coarsest``; at most two ranges per source.
    """
    pieces: dict[str, list[Range]] = {"raw": []}
    finer = "raw"
    lo, hi = start, end
    for grain in GRAINS[: GRAINS.index(coarsest) + 1]:
        pieces[grain] = []
        inner_lo, inner_hi = ceil(lo, grain), floor(hi, grain)
        if inner_lo >= inner_hi:
            pieces[finer].append((lo, hi))
            return pieces
        pieces[finer] += [(lo, inner_lo), (inner_hi, hi)]
        finer, lo, hi = grain, inner_lo, inner_hi
    pieces[finer].append((lo, hi))
    return pieces


def buckets(start: datetime, end: datetime, grain: Grain) -> list[datetime]:
    """Start of every ``grain`` bucket that overlaps ``[start, end)``."""
    found, moment = [], floor(start, grain)
    while moment < end:
        found.append(moment)
        moment = shift(moment, grain)
    return found
