"""Time on the wire: ISO 8601 UTC with milliseconds and a ``Z``."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC (a naive one is taken to be UTC); ValueError when UTC cannot hold it."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("Timestamp out of range") from None
