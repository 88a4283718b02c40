"""Responses for people: tables sized to the terminal, money as $1,234.56, times in local time.

How a value looks follows the API's naming: numbers named for money (budget, spent, cost, ...)
are USD, strings ending in ``_at`` (and ``timestamp``) are ISO 8601 instants, ``percent_*``
are percentages. ``--json`` bypasses all of this and prints the body as the API sent it.
"""

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

_MONEY = re.compile(r"budget|spent|cost|outstanding|remaining|overdrawn|returned|granted|usd")
_CENTS = Decimal("0.01")


def console() -> Console:
    """Standard output; no markup, so a name like ``[bold]`` prints as itself."""
    return Console(highlight=False, markup=False)


def money(value: float) -> str:
    """$1,234.56; a per-call amount finer than a cent keeps its digits ($0.000125)."""
    amount = Decimal(repr(value))
    if amount == amount.quantize(_CENTS):
        return f"{'-' if amount < 0 else ''}${abs(amount):,.2f}"
    return f"{'-' if amount < 0 else ''}${abs(amount):,.6f}".rstrip("0")


def local_time(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def cell(name: str, value: Any) -> str:
    """One value as a person reads it; ``name`` is its field's name."""
    leaf = name.rsplit(".", 1)[-1]
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if leaf.startswith("percent"):
            return f"{value:.1f}%"
        return money(value) if _MONEY.search(leaf) else f"{value:,}"
    if isinstance(value, str):
        return local_time(value) if leaf.endswith("_at") or leaf == "timestamp" else value
    if isinstance(value, list) and all(not isinstance(item, dict | list) for item in value):
        return ", ".join(cell(leaf, item) for item in value) or "-"
    return json.dumps(value, separators=(",", ":"))


def flatten(body: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted names: ``{"ic_token": {"id": ..}}`` -> ``ic_token.id``."""
    flat: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _lookup(row: Mapping[str, Any], dotted: str) -> Any:
    value: Any = row
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def table(rows: Sequence[Mapping[str, Any]], columns: Iterable[str] = ()) -> Table:
    names = list(columns) or list(flatten(rows[0]) if rows else [])
    grid = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for index, name in enumerate(names):
        sample = _lookup(rows[0], name) if rows else None
        numeric = isinstance(sample, int | float) and not isinstance(sample, bool)
        # ids (the first column), figures and times stay on one line; text wraps to make room
        whole = index == 0 or numeric or name.endswith("_at") or name == "timestamp"
        grid.add_column(
            name.upper().replace("_", " "),
            justify="right" if numeric else "left",
            no_wrap=whole,
            overflow="ellipsis" if whole and index else "fold",
        )
    for row in rows:
        grid.add_row(*(Text(cell(name, _lookup(row, name))) for name in names))
    return grid


def fields(body: Mapping[str, Any]) -> Table:
    """One object as FIELD / VALUE lines."""
    grid = Table(box=box.SIMPLE_HEAD, header_style="bold", show_header=False)
    grid.add_column("field", style="bold", no_wrap=True)
    grid.add_column("value", overflow="fold")
    for name, value in flatten(body).items():
        grid.add_row(Text(name), Text(cell(name, value)))
    return grid


def render(body: Any, rows_key: str, columns: Sequence[str]) -> None:
    """A response body: its list as a table (with the page line), else its fields."""
    out = console()
    if not isinstance(body, dict):
        out.print(table(body, columns) if isinstance(body, list) else str(body))
        return
    rows = body.get(rows_key)
    if not isinstance(rows, list):
        out.print(fields(body))
        return
    rest = {key: value for key, value in body.items() if key not in (rows_key, "pagination")}
    if rest:
        out.print(fields(rest))
    out.print(table(rows, columns) if rows else "No results.")
    page = body.get("pagination")
    if isinstance(page, dict):
        out.print(
            f"Page {page.get('page')} of {max(page.get('total_pages') or 0, 1)} ({page.get('total')} in all)"
        )
