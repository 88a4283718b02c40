"""PUT bodies of optional fields, for any domain."""

from typing import Any

import msgspec
from msgspec import UNSET


class PartialUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A PUT body of optional fields (declared ``T | UnsetType = UNSET``): an absent one stays as it is.

    An unknown field is refused rather than ignored (a typo, or a field with an
    endpoint of its own, must not be a silent no-op), and so is an empty body.
    """

    def __post_init__(self) -> None:
        if not self.given():
            raise ValueError("Give at least one field to change")

    def given(self) -> dict[str, Any]:
        """The fields present in the body, by name."""
        values = {name: getattr(self, name) for name in self.__struct_fields__}
        return {name: value for name, value in values.items() if value is not UNSET}
