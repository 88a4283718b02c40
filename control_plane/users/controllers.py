"""Endpoints of this domain (being built)."""

from typing import Any

handlers: list[Any] = []
