"""Path parameters: a malformed id is a 400 with a field error, an unknown one a 404."""

from control_plane.lib.errors import validation_error
from iron import ids


def checked_id(prefix: str, value: str, field: str = "id") -> str:
    if not ids.is_valid(prefix, value):
        raise validation_error({field: f"Expected an id of the form {prefix}_<uuid4>"})
    return value
