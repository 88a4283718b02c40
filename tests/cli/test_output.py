"""How values look in tables: money, times, percentages, lists; nested fields by dotted name."""

import io
import os
import time
from collections.abc import Iterator

import pytest
from rich.console import Console

from iron.cli.output import cell, fields, flatten, money, table


@pytest.fixture
def utc_plus_two() -> Iterator[None]:
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "Etc/GMT-2"  # POSIX sign: two hours east of UTC
    time.tzset()
    yield
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()


@pytest.mark.parametrize(
    ("value", "shown"),
    [(1234.56, "$1,234.56"), (100, "$100.00"), (0, "$0.00"), (-2.5, "-$2.50"), (0.000125, "$0.000125")],
)
def test_money(value: float, shown: str) -> None:
    assert money(value) == shown


@pytest.mark.usefixtures("utc_plus_two")
def test_cells_follow_the_field_names() -> None:
    assert cell("budget", 1500) == "$1,500.00"
    assert cell("agent.remaining", 12.5) == "$12.50"
    assert cell("percent_used", 12.345) == "12.3%"
    assert cell("open_leases", 1200) == "1,200"
    assert cell("created_at", "2025-12-10T10:30:45.123Z") == "2025-12-10 12:30:45"  # local time
    assert cell("timestamp", "not a time") == "not a time"
    assert cell("tags", ["a", "b"]) == "a, b"
    assert cell("providers", []) == "-"
    assert cell("revoked_at", None) == "-"
    assert cell("credentials_configured", True) == "yes"
    assert cell("changes", {"before": 1}) == '{"before":1}'


def test_nested_fields_flatten_to_dotted_names() -> None:
    body = {"id": "agent_1", "ic_token": {"id": "ic_1", "token": "ic_x"}, "empty": {}}
    assert flatten(body) == {"id": "agent_1", "ic_token.id": "ic_1", "ic_token.token": "ic_x", "empty": {}}


def test_values_are_never_markup() -> None:
    shown = Console(file=io.StringIO(), width=60)  # markup on: the cells must not be read as markup
    shown.print(table([{"name": "[bold]x[/]", "note": "[/]"}]), fields({"name": "[red]y"}))
    text = shown.file.getvalue()  # type: ignore[attr-defined]
    assert "[bold]x[/]" in text
    assert "[red]y" in text
