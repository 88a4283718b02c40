"""Strict JSON decoding that reports every field error of a request at once.

msgspec stops at the first error. That is the fast path: a valid body is
decoded in one call. Only when it fails do we walk the raw document field by
field, so a client sees all of its mistakes in one response.
"""

import math
from typing import Annotated, Any, TypeVar, get_args, get_origin

import msgspec

T = TypeVar("T")

FieldErrors = dict[str, str]

# ``1e999`` becomes ``inf`` here instead of failing the whole document, so the
# field's own constraints report it alongside every other error.
_untyped = msgspec.json.Decoder(float_hook=float)


class InvalidBody(Exception):
    """The body is not what the endpoint takes; ``fields`` maps a JSON path to a message."""

    def __init__(self, fields: FieldErrors, message: str = "Request validation failed") -> None:
        super().__init__(message)
        self.fields = fields
        self.message = message


def _clean(error: msgspec.ValidationError) -> tuple[str, str]:
    """Split msgspec's ``"Expected `int` - at `$.a[0]`"`` into a relative path and a message."""
    text = str(error)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        return "", text
    return where.rstrip("`").removeprefix("$"), message


def _join(prefix: str, suffix: str) -> str:
    if not suffix:
        return prefix
    if suffix.startswith("["):
        return prefix + suffix
    return f"{prefix}.{suffix.lstrip('.')}" if prefix else suffix.lstrip(".")


def _collect(raw: Any, type_: Any, path: str, errors: FieldErrors) -> None:
    if get_origin(type_) is Annotated:
        before = len(errors)
        _collect(raw, get_args(type_)[0], path, errors)
        if len(errors) == before:
            _convert(raw, type_, path, errors)  # the constraints on the whole value
        return
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct):
        if not isinstance(raw, dict):
            errors[path or "body"] = "Expected a JSON object"
            return
        before = len(errors)
        for field in msgspec.structs.fields(type_):
            where = _join(path, field.encode_name)
            if field.encode_name not in raw:
                if field.required:
                    errors[where] = "Field required"
                continue
            _collect(raw[field.encode_name], field.type, where, errors)
        if len(errors) == before:
            _convert(raw, type_, path, errors)  # cross-field rules (__post_init__)
        return
    if get_origin(type_) is list and isinstance(raw, list):
        (item_type,) = get_args(type_) or (Any,)
        for index, item in enumerate(raw):
            _collect(item, item_type, f"{path}[{index}]", errors)
        return
    _convert(raw, type_, path, errors)


def _convert(raw: Any, type_: Any, path: str, errors: FieldErrors) -> None:
    if isinstance(raw, float) and not math.isfinite(raw):  # 1e999, turned into inf above
        errors[path or "body"] = "Number out of range"
        return
    try:
        msgspec.convert(raw, type_, strict=True)
    except msgspec.ValidationError as exc:
        where, message = _clean(exc)
        errors[_join(path, where) or "body"] = message


_NUL = "\x00"


def _nul_paths(raw: Any, path: str, found: FieldErrors) -> None:
    if isinstance(raw, str) and _NUL in raw:
        found[path or "body"] = "Text may not contain NUL (\\u0000) characters"
    elif isinstance(raw, dict):
        for key, value in raw.items():
            _nul_paths(value, _join(path, str(key)), found)
    elif isinstance(raw, list):
        for index, value in enumerate(raw):
            _nul_paths(value, f"{path}[{index}]", found)


def has_field(body: bytes, name: str) -> bool:
    """Whether ``body`` is a JSON object with the field ``name``: how an endpoint taking one item or
    a batch (``{"name": [...]}``) tells them apart before decoding either."""
    try:
        return name in msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    except msgspec.MsgspecError:
        return False


def decode(body: bytes, type_: type[T]) -> T:
    """Decode ``body`` as ``type_`` or raise :class:`InvalidBody` naming every bad field.

    Text with a NUL character is refused too: no database stores it.
    """
    try:
        value = msgspec.json.decode(body, type=type_)
        if b"\\u0000" in body:  # rare: find where, to say which field
            nul: FieldErrors = {}
            _nul_paths(_untyped.decode(body), "", nul)
            if nul:
                raise InvalidBody(nul)
        return value
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError:
        raise InvalidBody({"body": "Malformed JSON"}, "Request body is not valid JSON") from None
    try:
        raw = _untyped.decode(body)
    except msgspec.DecodeError:  # "[" fails the type check before the parser reaches the end
        raise InvalidBody({"body": "Malformed JSON"}, "Request body is not valid JSON") from None
    errors: FieldErrors = {}
    _collect(raw, type_, "", errors)
    raise InvalidBody(errors or {"body": "Invalid request body"})
