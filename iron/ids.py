"""Prefixed identifiers: ``<prefix>_<uuid4>``, as the contract fixes them."""

import re
import uuid
from typing import Final

USER: Final = "user"
AGENT: Final = "agent"
PROVIDER: Final = "ip"
PROJECT: Final = "proj"
API_TOKEN: Final = "at"
IC_TOKEN: Final = "ic"
LEASE: Final = "lease"
BUDGET_REQUEST: Final = "breq"
AUDIT: Final = "audit"
EVENT: Final = "evt"
REQUEST: Final = "req"
# Prefixes of secret values (not ids): an API token reads apitok_..., a refresh token rt_...
API_TOKEN_VALUE: Final = "apitok"
REFRESH_TOKEN_VALUE: Final = "rt"

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4()}"


def pattern(prefix: str) -> str:
    """The regular expression an id of this prefix matches, for msgspec constraints."""
    return f"^{prefix}_{_UUID}$"


def is_valid(prefix: str, value: str) -> bool:
    return re.fullmatch(pattern(prefix), value) is not None
