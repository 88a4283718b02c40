"""Query filters of list endpoints, checked the same way everywhere.

Each reads one parameter and records a bad value in ``errors`` instead of
raising, so that :func:`control_plane.lib.pagination.page_request` reports
every bad parameter of a request at once.
"""

from collections.abc import Mapping, Sequence

from control_plane.lib.pagination import contains_pattern
from iron import ids

MAX_SEARCH = 200


def one_of(query: Mapping[str, str], name: str, choices: Sequence[str], errors: dict[str, str]) -> str | None:
    value = query.get(name)
    if value is not None and value not in choices:
        errors[name] = "Must be one of " + ", ".join(choices)
        return None
    return value


def id_of(query: Mapping[str, str], name: str, prefix: str, errors: dict[str, str]) -> str | None:
    value = query.get(name)
    if value is not None and not ids.is_valid(prefix, value):
        errors[name] = f"Expected an id of the form {prefix}_<uuid4>"
        return None
    return value


def search_of(query: Mapping[str, str], errors: dict[str, str]) -> str | None:
    """``search``, as an ILIKE pattern for a case-insensitive contains."""
    value = query.get("search")
    if value is not None and len(value) > MAX_SEARCH:
        errors["search"] = f"At most {MAX_SEARCH} characters"
        return None
    return contains_pattern(value) if value else None
