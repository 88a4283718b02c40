"""An operation's click parameters, each knowing where its value goes on the wire.

Path parameters are arguments; query parameters and body fields are options. Body options are
generated from the server's msgspec request type: its field names, types, choices and limits,
nested structs flattened (``credentials.api_key`` is ``--api-key``). Values are not checked
here beyond their type: the server validates, and reports every bad field at once.
"""

import re
from dataclasses import dataclass
from typing import Any, Literal

import click
import msgspec
import msgspec.inspect as mi

from iron.cli.operations import Query

SECRETS = frozenset({"api_key", "password"})  # prompted for, hidden, when required and not given


@dataclass(frozen=True, slots=True)
class Wire:
    location: Literal["path", "query", "body"]
    name: tuple[str, ...]  # in the body: the keys down to the field
    required: bool = False  # by the API
    clears: bool = False  # a --clear-FIELD flag: sends null


class ApiArgument(click.Argument):
    def __init__(self, wire: Wire, **attrs: Any) -> None:
        super().__init__([_param_name(wire)], **attrs)
        self.wire = wire


class ApiOption(click.Option):
    def __init__(self, flags: list[str], wire: Wire, **attrs: Any) -> None:
        super().__init__([*flags, _param_name(wire)], **attrs)
        self.wire = wire


def _param_name(wire: Wire) -> str:
    return "__".join((wire.location, *wire.name, *(["clear"] if wire.clears else [])))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def path_arguments(path: str) -> list[click.Parameter]:
    return [
        ApiArgument(Wire("path", (name,), required=True), metavar=name.upper())
        for name in re.findall(r"\{(\w+)\}", path)
    ]


def query_option(query: Query) -> click.Parameter:
    kind: click.ParamType[Any] = (
        click.Choice(query.choices) if query.choices else click.INT if query.integer else click.STRING
    )
    return ApiOption([_flag(query.name)], Wire("query", (query.name,)), type=kind, help=query.help or None)


def body_options(struct: type[msgspec.Struct]) -> list[click.Parameter]:
    info = mi.type_info(struct)
    assert isinstance(info, mi.StructType)
    return [option for field in info.fields for option in _field_options(field, (), True)]


def _unwrap(kind: mi.Type) -> tuple[mi.Type, bool]:
    """The field's type without ``None``, and whether it allows ``None``."""
    if not isinstance(kind, mi.UnionType):
        return kind, False
    others = [member for member in kind.types if not isinstance(member, mi.NoneType)]
    if len(others) != 1:
        raise TypeError(f"no option type for {kind}")
    return others[0], len(others) < len(kind.types)


def _scalar(kind: mi.Type) -> click.ParamType[Any]:
    if isinstance(kind, mi.LiteralType):
        return click.Choice([str(value) for value in kind.values])
    if isinstance(kind, mi.IntType):
        return click.INT
    if isinstance(kind, mi.FloatType):
        return click.FLOAT
    return click.STRING


def _limits(kind: mi.Type) -> str:
    """The server's limits on a value, for the help text."""
    if isinstance(kind, mi.StrType | mi.ListType) and (kind.min_length or kind.max_length):
        unit = "characters" if isinstance(kind, mi.StrType) else "items"
        low, high = kind.min_length or 0, kind.max_length
        if high is None:
            return f"at least {low} {unit}"
        return f"{low}-{high} {unit}" if low else f"at most {high} {unit}"
    if isinstance(kind, mi.IntType | mi.FloatType):
        bounds = [(">=", kind.ge), (">", kind.gt), ("<=", kind.le), ("<", kind.lt)]
        return ", ".join(f"{sign} {value:,}" for sign, value in bounds if value is not None)
    return ""


def _field_options(field: mi.Field, parent: tuple[str, ...], parent_required: bool) -> list[click.Parameter]:
    name = (*parent, field.encode_name)
    kind, nullable = _unwrap(field.type)
    required = field.required and parent_required
    if isinstance(kind, mi.StructType):
        return [option for sub in kind.fields for option in _field_options(sub, name, required)]
    flag, wire = _flag(field.encode_name), Wire("body", name, required=required)
    about = ", ".join(filter(None, [f"Body field {'.'.join(name)}", _limits(kind)]))
    options: list[click.Parameter]
    if isinstance(kind, mi.BoolType):
        options = [ApiOption([f"{flag}/--no-{flag[2:]}"], wire, default=None, help=about)]
    elif isinstance(kind, mi.ListType):
        item = _limits(kind.item_type)
        help_text = f"{about}; repeat for several" + (f" (each {item})" if item else "")
        options = [ApiOption([flag], wire, multiple=True, type=_scalar(kind.item_type), help=help_text)]
    else:
        secret = field.encode_name in SECRETS
        prompt = required and secret
        attrs: dict[str, Any] = {"prompt": prompt, "hide_input": secret} if prompt else {}
        options = [
            ApiOption([flag], wire, type=_scalar(kind), required=required and not prompt, help=about, **attrs)
        ]
    if nullable and not field.required and field.default is msgspec.NODEFAULT:  # a partial update's field
        clear = Wire("body", name, clears=True)
        options.append(
            ApiOption([f"--clear-{flag[2:]}"], clear, is_flag=True, help=f"Set {field.encode_name} to null")
        )
    return options


def _put(body: dict[str, Any], name: tuple[str, ...], value: Any) -> None:
    for key in name[:-1]:
        body = body.setdefault(key, {})
    body[name[-1]] = value


@dataclass(frozen=True, slots=True)
class Call:
    path: dict[str, str]
    query: dict[str, Any]
    body: dict[str, Any]


def call_of(params: list[click.Parameter], values: dict[str, Any]) -> Call:
    """The request parts from a command's values; what was not given is not sent."""
    parts: dict[str, dict[str, Any]] = {"path": {}, "query": {}, "body": {}}
    for param in params:
        wire = getattr(param, "wire", None)
        if not isinstance(wire, Wire) or param.name is None:
            continue
        value = values.get(param.name)
        if wire.clears:
            if not value:
                continue
            if values.get(_param_name(Wire("body", wire.name))) not in (None, ()):
                raise click.UsageError(f"give either {param.opts[0]} or a value for {'.'.join(wire.name)}")
            value = None
        elif value is None or value == ():
            if not (wire.required and value == ()):
                continue
            value = []  # a required list given no items: the empty list
        elif isinstance(value, tuple):
            value = list(value)
        _put(parts[wire.location], wire.name, value)
    return Call(path=parts["path"], query=parts["query"], body=parts["body"])
