"""The OpenAPI document the app serves at ``/schema/openapi.json``: every route, schema and error.

Litestar generates paths, path parameters and success responses from the handlers. Our
handlers read their bodies as ``RawBody`` and decode them with ``iron.validation.decode``, so
Litestar knows neither the request bodies nor the query parameters read from
``request.query_params``, and it documents its own 400 shape rather than ours. This module
patches the generated document once per app (then caches it):

* request bodies, query parameters, extra success responses and the kind of token, from three
  sources, the later overriding the earlier field by field:

  1. the handler's code: ``decode(body, T)`` (``iron.validation.decode``) documents ``T`` as
     the body, optional when written ``decode(body or b"{}", T)`` or under ``if body...``,
     one of several when there are several; a call of ``current_agent`` marks the IC token;
  2. :data:`REGISTRY` here, keyed by ``(METHOD, path)`` (any one path of a handler with
     aliases names all of them): :func:`register`;
  3. the handler's ``opt``: ``@post(path, opt=openapi.doc(body=T, query={...}))``, i.e. the
     keys ``body``, ``body_required``, ``query``, ``responses``, ``errors``, ``auth``.

  Schemas are msgspec's own (``schema_components``), so they say exactly what ``decode``
  accepts and what msgspec encodes;
* list parameters ``page``, ``per_page`` and ``sort`` on every operation that returns a page;
* our error format on every operation, for the statuses it can return: 400 when it takes any
  input, 401 and 403 when it takes a token, 404 when it names a resource or takes a body, 409
  for authenticated mutations, 413 for bodies, 429 when rate limited, 500 always;
* security: ``UserToken`` (JWT from login, or an ``apitok_`` API token) on every operation that
  takes the ``user`` dependency, ``IcToken`` on the agent side;
* headers: ``X-Request-ID`` on every response; ``X-RateLimit-*`` (and ``Retry-After`` on 429)
  where rate limits apply, with the limit itself in an ``x-rate-limit`` extension.

:func:`document` returns the patched document; :func:`config` is the app's ``openapi_config``.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import textwrap
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Annotated, Any, Final

import msgspec
from litestar import Litestar, Request
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.routes import HTTPRoute
from litestar.types.internal_types import PathParameterDefinition

import iron
from control_plane.lib import ratelimit
from iron import validation

DOC_KEYS: Final = ("body", "body_required", "query", "responses", "errors", "auth")
_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_MUTATIONS: Final = frozenset({"post", "put", "patch", "delete"})
_REF: Final = "#/components/schemas/{name}"
_CACHE_KEY: Final = "_iron_openapi_document"

USER_AUTH: Final = "user"
AGENT_AUTH: Final = "agent"
NO_AUTH: Final = "none"


@dataclass(frozen=True, slots=True)
class OperationDoc:
    """What Litestar cannot see of one operation.

    Types are anything msgspec can describe, or ``"package.module:Name"`` strings or functions
    returning a type, resolved when the document is built (for registry entries: no import
    cycles).
    """

    #: The request body's type; a tuple of types means "one of these".
    body: Any = None
    body_required: bool = True
    #: Query parameters: name -> type (all optional).
    query: Mapping[str, Any] = field(default_factory=dict)
    #: Success responses Litestar cannot infer: status -> type (JSON), ``None`` (no content), or
    #: a mapping media type -> type (``{"text/csv": str, "application/json": list[Entry]}``).
    responses: Mapping[int, Any] = field(default_factory=dict)
    #: Error statuses beyond the inferred ones.
    errors: Collection[int] = ()
    #: ``user``, ``agent`` or ``none``; by default ``user`` iff it takes the user dependency.
    auth: str | None = None


def _checked(fields: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(DOC_KEYS)
    if unknown:
        raise TypeError(f"unknown OpenAPI doc fields: {', '.join(sorted(unknown))}")
    return dict(fields)


def doc(**fields: Any) -> dict[str, Any]:
    """For a route decorator's ``opt``: ``@post(path, opt=openapi.doc(body=AgentCreate))``."""
    return _checked(fields)


#: Documentation of handlers that do not carry it in ``opt``: ``(METHOD, path)`` -> fields.
REGISTRY: dict[tuple[str, str], dict[str, Any]] = {}


def register(method: str, path: str, **fields: Any) -> None:
    REGISTRY[(method.upper(), path)] = _checked(fields)


PAGE_QUERY: Final[Mapping[str, Any]] = {
    "page": Annotated[int, msgspec.Meta(ge=1, description="Page number, from 1")],
    "per_page": Annotated[int, msgspec.Meta(ge=1, le=100, description="Items per page (default 50)")],
    "sort": Annotated[str, msgspec.Meta(description="A sortable field, '-' first for descending")],
}


class IcTokenInBody(msgspec.Struct, kw_only=True):
    """The agent side takes the IC token as a bearer header or as this body field."""

    ic_token: str | None = None


register("GET", "/api/health", responses={503: "control_plane.system.controllers:Health"})
register("POST", "/api/v1/auth/login", errors=(401, 403, 429))
register("POST", "/api/v1/auth/refresh", errors=(401,))
register(
    "GET",
    "/api/v1/audit-logs/export",
    responses={
        200: {
            "text/csv": str,
            "application/json": lambda: _list_of("control_plane.audit.schemas:AuditEntry"),
        }
    },
)
register("POST", "/api/v1/budget/handshake", errors=(404, 409))
register(
    "POST",
    "/api/v1/budget/report",
    body=("iron.protocol:UsageReport", "iron.protocol:UsageBatch"),
    responses={200: "iron.protocol:BatchReportResponse", 204: None},
    errors=(404, 409),
)
register("POST", "/api/v1/budget/refresh", errors=(404, 409))
register("POST", "/api/v1/budget/return", errors=(404, 409))
register("POST", "/api/v1/agents/provider-key", body=IcTokenInBody, body_required=False, errors=(404,))


# --- the error format ------------------------------------------------------------------------


class ErrorInfo(msgspec.Struct, kw_only=True):
    code: Annotated[str, msgspec.Meta(pattern=r"^[A-Z][A-Z0-9_]*$", examples=["VALIDATION_ERROR"])]
    message: str
    fields: dict[str, str] = {}
    details: dict[str, Any] = {}
    request_id: str
    timestamp: str


class ErrorResponse(msgspec.Struct):
    """``{"error": {...}}``: every failure, whatever its status."""

    error: ErrorInfo


class RateLimitDetails(msgspec.Struct, kw_only=True):
    limit: int
    window_seconds: int
    retry_after_seconds: int
    reset_at: str


class RateLimitInfo(msgspec.Struct, kw_only=True):
    code: Annotated[str, msgspec.Meta(pattern="^RATE_LIMIT_EXCEEDED$")]
    message: str
    details: RateLimitDetails
    request_id: str
    timestamp: str


class RateLimitError(msgspec.Struct):
    """429 ``RATE_LIMIT_EXCEEDED``, with ``Retry-After``."""

    error: RateLimitInfo


_ERROR_TEXT: Final[Mapping[int, str]] = {
    400: "Invalid input: VALIDATION_ERROR names every bad field in `fields`",
    401: "Missing, invalid, expired or revoked token (AUTH_INVALID_TOKEN, AUTH_TOKEN_EXPIRED, ...)",
    403: "Not allowed (PERMISSION_DENIED; an IC token on a user endpoint; BUDGET_EXHAUSTED)",
    404: "No such resource (RESOURCE_NOT_FOUND)",
    409: "Conflicts with the resource's state (RESOURCE_CONFLICT)",
    413: "Request body too large (REQUEST_TOO_LARGE)",
    429: "Rate limit exceeded (RATE_LIMIT_EXCEEDED); retry after `Retry-After` seconds",
    500: "Unexpected server error (SERVER_INTERNAL_ERROR); nothing internal is shown",
    503: "A service the control plane needs is unavailable",
}

SECURITY_SCHEMES: Final[Mapping[str, Any]] = {
    "UserToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A user token from POST /api/v1/auth/login, or an API token (apitok_...) "
        "with its user's rights. An IC token here gives 403.",
    },
    "IcToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "An agent's IC token (ic_...); the budget protocol also accepts it as the "
        "body field `ic_token`.",
    },
}


def _header(description: str, type_: str = "integer", required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": {"type": type_}}


HEADERS: Final[Mapping[str, Any]] = {
    "X-Request-ID": _header("The request's id (req_...), also in error bodies", "string", required=True),
    "X-RateLimit-Limit": _header("Requests allowed in the window"),
    "X-RateLimit-Remaining": _header("Requests left in the window"),
    "X-RateLimit-Reset": _header("Unix time (s) at which the oldest counted request leaves the window"),
    "Retry-After": _header("Seconds to wait before retrying", required=True),
}
_RATE_HEADERS: Final = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def _header_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


# --- building --------------------------------------------------------------------------------


def _list_of(name: str) -> Any:
    item = _resolve(name)
    return list[item]  # type: ignore[valid-type]


def _resolve(value: Any) -> Any:
    """A type, from ``"package.module:Name"`` or a function returning it, both resolved late."""
    if isinstance(value, str) and ":" in value:
        module, _, name = value.partition(":")
        return getattr(importlib.import_module(module), name)
    if inspect.isfunction(value):
        return value()
    return value


def _handlers(app: Litestar) -> dict[tuple[str, str], HTTPRouteHandler]:
    """``(path, METHOD)`` -> handler, for every documented HTTP route."""
    found: dict[tuple[str, str], HTTPRouteHandler] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods:
                found[(route.path_format or "/", method)] = handler
    return found


def _handler_paths(app: Litestar, handler: HTTPRouteHandler) -> list[str]:
    return [
        route.path_format or "/"
        for route in app.routes
        if isinstance(route, HTTPRoute) and any(h is handler for h in route.route_handlers)
    ]


def _doc_of(app: Litestar, handler: HTTPRouteHandler | None, method: str, path: str) -> OperationDoc:
    if handler is None:
        return OperationDoc()
    registered = REGISTRY.get((method, path))
    if registered is None:
        for alias in _handler_paths(app, handler):
            if (registered := REGISTRY.get((method, alias))) is not None:
                break
    given = {key: handler.opt[key] for key in DOC_KEYS if key in handler.opt}
    return replace(_inferred(handler), **(registered or {}), **given)


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _mentions(node: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))


def _evaluate(node: ast.expr, namespace: Mapping[str, Any]) -> Any:
    """A name or dotted name from the handler's module, else ``None``."""
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _evaluate(node.value, namespace)
        return getattr(owner, node.attr, None) if owner is not None else None
    return None


def _inferred(handler: HTTPRouteHandler) -> OperationDoc:
    """What the handler's own code says: ``decode(body, T)`` and ``current_agent(...)``."""
    fn = inspect.unwrap(handler.fn)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return OperationDoc()
    namespace = getattr(fn, "__globals__", {})
    bodies: list[Any] = []
    required, agent = True, False
    for node in ast.walk(tree):
        if isinstance(node, ast.IfExp | ast.If) and _mentions(node.test, "body"):
            branches = node.body if isinstance(node.body, list) else [node.body]
            if any(
                isinstance(n, ast.Call) and _called_name(n) == "decode"
                for branch in branches
                for n in ast.walk(branch)
            ):
                required = False  # decoded only when there is a body
        if not isinstance(node, ast.Call):
            continue
        name = _called_name(node)
        if name == "current_agent":
            agent = True
        if name != "decode" or len(node.args) < 2 or not _mentions(node.args[0], "body"):
            continue
        if _evaluate(node.func, namespace) is not validation.decode:
            continue
        if isinstance(node.args[0], ast.BoolOp):
            required = False  # ``decode(body or b"{}", T)``
        type_ = _evaluate(node.args[1], namespace)
        if type_ is not None and type_ not in bodies:
            bodies.append(type_)
    body: Any = None if not bodies else bodies[0] if len(bodies) == 1 else tuple(bodies)
    return OperationDoc(body=body, body_required=required, auth=AGENT_AUTH if agent else None)


def _takes(handler: HTTPRouteHandler, name: str) -> bool:
    """Does the handler take the dependency ``name``, directly or through another dependency?"""
    dependencies = handler.resolve_dependencies()
    pending, seen = list(handler.parsed_fn_signature.parameters), set()
    while pending:
        current = pending.pop()
        if current == name:
            return True
        if current in seen or current not in dependencies:
            continue
        seen.add(current)
        pending.extend(inspect.signature(dependencies[current].dependency).parameters)
    return False


def _takes_body(handler: HTTPRouteHandler) -> bool:
    parameters = handler.parsed_fn_signature.parameters
    return "body" in parameters or "data" in parameters


@dataclass
class _Plan:
    """One operation, with the types it needs schemas for."""

    path: str
    method: str
    operation: dict[str, Any]
    doc: OperationDoc
    handler: HTTPRouteHandler | None
    body: tuple[Any, ...] = ()
    query: dict[str, Any] = field(default_factory=dict)
    #: status -> {media type: index of its schema} (empty: no content)
    responses: dict[int, dict[str, int]] = field(default_factory=dict)


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                yield path, method, item[method]


def _walk_refs(node: Any, renames: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                name = value.rsplit("/", 1)[-1]
                value = _REF.format(name=renames.get(name, name))
            out[key] = _walk_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_walk_refs(item, renames) for item in node]
    return node


class _Schemas:
    """msgspec schemas of many types, merged into the document's components."""

    def __init__(self) -> None:
        self._types: list[Any] = []

    def add(self, type_: Any) -> int:
        for index, known in enumerate(self._types):
            if known is type_ or known == type_:
                return index
        self._types.append(type_)
        return len(self._types) - 1

    def generate(self, components: dict[str, Any]) -> list[dict[str, Any]]:
        """Merge into ``components``; return each added type's schema, in order.

        A name Litestar already used for a schema of the same properties is the same type:
        msgspec's schema replaces Litestar's (it is the exact wire form, as msgspec both
        encodes and decodes it). A name used for anything else is renamed ``Name_2``, ...
        """
        schemas, generated = msgspec.json.schema_components(self._types, ref_template=_REF)
        renames: dict[str, str] = {}
        for name, schema in generated.items():
            existing = components.get(name)
            if existing is not None and _shape(existing) != _shape(schema):
                new, n = f"{name}_2", 2
                while new in components or new in generated:
                    n += 1
                    new = f"{name}_{n}"
                renames[name] = new
        for name, schema in generated.items():
            components[renames.get(name, name)] = _walk_refs(schema, renames)
        return [_walk_refs(schema, renames) for schema in schemas]


def _shape(schema: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(schema.get("properties", {}))) or (str(schema.get("type")),)


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _status_text(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Response"


def _error_statuses(plan: _Plan, auth: str, limited: bool, has_body: bool) -> set[int]:
    op = plan.operation
    path_params = any(p.get("in") == "path" for p in op.get("parameters", []))
    query_params = any(p.get("in") == "query" for p in op.get("parameters", []))
    statuses = {500, *plan.doc.errors}
    if has_body or path_params or query_params:
        statuses.add(400)
    if auth != NO_AUTH:
        statuses |= {401, 403}
    if path_params or has_body:
        statuses.add(404)
    if has_body:
        statuses.add(413)
    if plan.method in _MUTATIONS and auth != NO_AUTH:
        statuses.add(409)
    if limited:
        statuses.add(429)
    return statuses


def _patch(app: Litestar, schema: dict[str, Any]) -> dict[str, Any]:
    handlers = _handlers(app)
    components = schema.setdefault("components", {})
    component_schemas = components.setdefault("schemas", {})
    components["securitySchemes"] = copy.deepcopy(dict(SECURITY_SCHEMES))
    components["headers"] = copy.deepcopy(dict(HEADERS))
    registry = _Schemas()
    error_index = registry.add(ErrorResponse)
    rate_index = registry.add(RateLimitError)
    plans: list[_Plan] = []
    for path, method, operation in _operations(schema):
        handler = handlers.get((path, method.upper()))
        plan = _Plan(path, method, operation, _doc_of(app, handler, method.upper(), path), handler)
        body = plan.doc.body
        if body is not None:
            alternatives = body if isinstance(body, tuple | list) else (body,)
            plan.body = tuple(registry.add(_resolve(t)) for t in alternatives)
        query = dict(plan.doc.query)
        ok = operation.get("responses", {}).get("200", {})
        ref = ok.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
        if ref.rsplit("/", 1)[-1].startswith("Page_"):
            query = {**PAGE_QUERY, **query}
        plan.query = {name: registry.add(_resolve(t)) for name, t in query.items()}
        for status, described in plan.doc.responses.items():
            media = described if isinstance(described, Mapping) else {"application/json": described}
            if described is None:
                media = {}
            plan.responses[status] = {kind: registry.add(_resolve(t)) for kind, t in media.items()}
        plans.append(plan)
    generated = registry.generate(component_schemas)
    limits = ratelimit.limits_of(app.state)
    for plan in plans:
        _patch_operation(plan, generated, generated[error_index], generated[rate_index], limits)
    return schema


def _patch_operation(
    plan: _Plan,
    generated: list[dict[str, Any]],
    error_schema: dict[str, Any],
    rate_schema: dict[str, Any],
    limits: ratelimit.RateLimits,
) -> None:
    op, handler = plan.operation, plan.handler
    auth = plan.doc.auth or (USER_AUTH if handler is not None and _takes(handler, "user") else NO_AUTH)
    category = None
    if auth == USER_AUTH:
        category = ratelimit.category_of(plan.method, plan.path, handler.opt if handler else None)
    rule = limits.rule(category) if category else None
    if auth == USER_AUTH:
        op["security"] = [{"UserToken": []}]
    elif auth == AGENT_AUTH:
        op["security"] = [{"IcToken": []}]
    if rule is not None and category is not None:
        op["x-rate-limit"] = {
            "category": category,
            "limit": rule.limit,
            "window_seconds": rule.window_s,
            "per": ratelimit.SCOPES.get(category, "user"),
        }
    if plan.body:
        schemas = [generated[i] for i in plan.body]
        op["requestBody"] = {
            "required": plan.doc.body_required,
            "content": _content(schemas[0] if len(schemas) == 1 else {"anyOf": schemas}),
        }
    if plan.query:
        parameters = [
            p for p in op.get("parameters", []) if not (p.get("in") == "query" and p["name"] in plan.query)
        ]
        for name, index in plan.query.items():
            parameters.append({"name": name, "in": "query", "required": False, "schema": generated[index]})
        op["parameters"] = parameters
    responses: dict[str, Any] = op.setdefault("responses", {})
    for status, media in plan.responses.items():
        entry: dict[str, Any] = {"description": _status_text(status)}
        if media:
            entry["content"] = {kind: {"schema": generated[index]} for kind, index in media.items()}
        responses[str(status)] = entry
    if (
        plan.responses
        and 200 not in plan.responses
        and responses.get("200", {}).get("content", {}).get("application/json", {}).get("schema") == {}
    ):
        del responses["200"]  # Litestar's guess for a ``Response[Any]``, replaced by the doc
    responses.pop("400", None)  # Litestar's own ValidationException shape: never ours
    for empty in ("204", "304"):
        if empty in responses:
            responses[empty].pop("content", None)  # Litestar documents a JSON null; there is no body
    has_body = bool(plan.body) or _has_raw_body(handler)
    for error in sorted(_error_statuses(plan, auth, rule is not None, has_body)):
        if str(error) in responses:
            continue
        responses[str(error)] = {
            "description": _ERROR_TEXT.get(error, _status_text(error)),
            "content": _content(rate_schema if error == 429 else error_schema),
        }
    for code, response in responses.items():
        headers = response.setdefault("headers", {})
        names = ["X-Request-ID"]
        if rule is not None and code != "401":  # 401: the caller is unknown, nothing was counted
            names += _RATE_HEADERS
        if code == "429":
            names += [name for name in (*_RATE_HEADERS, "Retry-After") if name not in names]
        headers.update({name: _header_ref(name) for name in names})
    if not op.get("tags"):
        op["tags"] = [_tag(plan.path)]


def _has_raw_body(handler: HTTPRouteHandler | None) -> bool:
    return handler is not None and _takes_body(handler)


def _tag(path: str) -> str:
    parts = [p for p in path.split("/") if p and not p.startswith("{")]
    if parts[:2] == ["api", "v1"]:
        parts = parts[2:]
    elif parts[:1] == ["api"]:
        parts = parts[1:]
    if parts[:1] == ["budget"] and parts[1:2] != ["requests"]:
        return "budget protocol"
    return parts[0] if parts else "system"


def document(app: Litestar) -> dict[str, Any]:
    """The app's complete OpenAPI document (built once, then cached in the app's state)."""
    cached: dict[str, Any] | None = app.state.get(_CACHE_KEY)
    if cached is None:
        cached = _patch(app, copy.deepcopy(app.openapi_schema.to_schema()))
        app.state[_CACHE_KEY] = cached
    return cached


def undocumented_bodies(app: Litestar) -> list[str]:
    """``METHOD path`` of every operation whose handler reads a body the document does not describe."""
    schema = document(app)
    missing = []
    for (path, method), handler in sorted(_handlers(app).items()):
        operation = schema.get("paths", {}).get(path, {}).get(method.lower())
        if operation is not None and _takes_body(handler) and "requestBody" not in operation:
            missing.append(f"{method} {path}")
    return missing


class _ServedJson(JsonRenderPlugin):
    """Litestar's JSON renderer, fed the patched document instead of the raw one."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return self.render_json(request, document(request.app))


def operation_id(
    route_handler: HTTPRouteHandler, http_method: str, path_components: list[str | PathParameterDefinition]
) -> str:
    """``get_api_v1_agents_agent_id``: unique per method and path.

    Litestar's default drops the difference between ``/budget-requests`` and its alias
    ``/budget/requests`` and refuses to build the document.
    """
    names = [c.name if isinstance(c, PathParameterDefinition) else c for c in path_components]
    return "_".join([http_method.lower(), *filter(None, names)])


def config() -> OpenAPIConfig:
    """The app's ``openapi_config``: the document at ``/schema/openapi.json`` (and ``/schema``)."""
    return OpenAPIConfig(
        title="Iron Cage control plane",
        version=iron.__version__,
        description="Budget governance for LLM agents. Errors are always "
        '`{"error": {"code", "message", "fields"?, "details"?, "request_id", "timestamp"}}`.',
        path="/schema",
        render_plugins=[_ServedJson()],
        use_handler_docstrings=True,
        operation_id_creator=operation_id,
    )


__all__ = [
    "DOC_KEYS",
    "PAGE_QUERY",
    "REGISTRY",
    "ErrorResponse",
    "OperationDoc",
    "RateLimitError",
    "config",
    "doc",
    "document",
    "register",
    "undocumented_bodies",
]
