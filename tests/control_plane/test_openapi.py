"""The OpenAPI document: valid, complete, and true to what the server answers.

The last test drives schemathesis over every operation of the served document (so new routes
are covered as they land) against a control plane of its own: its own database and its own
Valkey, so that fuzzing (thousands of rows, failed logins that trip the per-IP throttle) never
touches what other tests see. A bounded number of examples per operation keeps it well under
a minute; ``IRON_SCHEMATHESIS_EXAMPLES`` raises it for a longer local campaign.
"""

import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis.errors import Unsatisfiable
from litestar import Litestar, get, post
from litestar.params import RawBody
from litestar.routes import HTTPRoute
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from control_plane.app import create_app
from control_plane.lib import openapi
from control_plane.lib.pagination import Page
from control_plane.settings import Settings
from iron.embedded import EmbeddedValkey, ServiceUrls, scratch_database
from iron.validation import decode
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, control_planes, provider_body
from tests.control_plane.helpers import paginated_lists

EXAMPLES = int(os.environ.get("IRON_SCHEMATHESIS_EXAMPLES", "10"))
NEGATIVE_EXAMPLES = max(EXAMPLES // 3, 2)
#: Text with NUL characters is generated too: the app must refuse it with a 400, never a 500.
ALLOW_NUL = True

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "delete", "patch", "head", "options", "trace"}:
                yield path, method, operation


# --- the document ----------------------------------------------------------------------------


async def test_the_served_document_is_valid_openapi(client: httpx.AsyncClient) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] == "Iron Cage control plane"


def test_every_route_of_the_app_is_documented(app: Litestar) -> None:
    document = openapi.document(app)
    missing = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format.startswith("/schema"):
            continue
        for handler in route.route_handlers:
            if handler.include_in_schema is False:
                continue
            for method in handler.http_methods - {"OPTIONS", "HEAD"}:
                if method.lower() not in document["paths"].get(route.path_format, {}):
                    missing.append(f"{method} {route.path_format}")
    assert missing == []
    assert "/api/v1/agents" in document["paths"]  # the walk above did see routes


def test_every_body_a_handler_reads_is_documented(app: Litestar) -> None:
    assert openapi.undocumented_bodies(app) == []


def test_every_operation_documents_its_errors_and_security(env: dict[str, str]) -> None:
    # an app of its own (never started): the suite's shared app runs with rate limits off
    document = openapi.document(create_app(Settings.from_env({**env, "IRON_RATE_LIMITS": ""})))
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    operation_ids = []
    for path, method, operation in _operations(document):
        where = f"{method.upper()} {path}"
        operation_ids.append(operation["operationId"])
        responses = operation["responses"]
        assert responses["500"]["content"]["application/json"]["schema"] == error, where
        for status, response in responses.items():
            assert "X-Request-ID" in response["headers"], where
            if status == "204":
                assert "content" not in response, where
            if status.startswith(("4", "5")) and status != "429" and path != "/api/health":
                assert response["content"]["application/json"]["schema"] == error, where
        security = operation.get("security")
        if security == [{"UserToken": []}]:
            assert {"401", "403"} <= set(responses), where
        if "x-rate-limit" in operation:
            limited = responses["429"]
            assert limited["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/RateLimitError"
            }, where
            assert {"Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
                limited["headers"]
            ), where
        if operation.get("requestBody"):
            assert "400" in responses, where
    assert len(operation_ids) == len(set(operation_ids))
    by_path = {(p, m): o for p, m, o in _operations(document)}
    assert by_path[("/api/v1/agents", "get")]["security"] == [{"UserToken": []}]
    assert by_path[("/api/v1/budget/handshake", "post")]["security"] == [{"IcToken": []}]
    assert by_path[("/api/v1/agents", "get")]["x-rate-limit"]["category"] == "read"
    assert "security" not in by_path[("/api/health", "get")]
    assert "x-rate-limit" not in by_path[("/api/v1/budget/report", "post")]
    assert set(document["components"]["securitySchemes"]) == {"UserToken", "IcToken"}


def _is_page(document: dict[str, Any], response: dict[str, Any]) -> bool:
    """A response whose schema is a page: ``data`` and ``pagination`` (other fields may follow)."""
    ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
    schema = document["components"]["schemas"].get(ref.removeprefix("#/components/schemas/"), {})
    pagination = schema.get("properties", {}).get("pagination", {})
    return pagination.get("$ref") == "#/components/schemas/Pagination" and "data" in schema["properties"]


def _violating(schema: dict[str, Any]) -> str:
    """A value outside a query parameter's string schema (enum, pattern, length or date)."""
    return "x" * (schema["maxLength"] + 1) if "maxLength" in schema else "~invalid~"


async def test_every_list_documents_paging_sorting_and_the_filters_it_reads(
    app: Litestar, client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """The document's list parameters are the ones the server reads: each documented filter
    refuses a value outside its schema (so the handler reads it), each documented sort works."""
    document = openapi.document(app)
    lists = [
        (path, operation)
        for path, method, operation in _operations(document)
        if method == "get" and _is_page(document, operation["responses"].get("200", {}))
    ]
    assert {path for path, _ in lists} == paginated_lists(app)  # every one, ``Page`` subclasses too
    for path, operation in lists:
        query = {p["name"]: p["schema"] for p in operation["parameters"] if p["in"] == "query"}
        assert query["page"] == {"description": "Page number, from 1", "type": "integer", "minimum": 1}
        assert (query["per_page"]["minimum"], query["per_page"]["maximum"]) == (1, 100), path
        sorts = query["sort"]["enum"]
        ascending = {s for s in sorts if not s.startswith("-")}
        assert ascending, path
        assert {f"-{s}" for s in ascending} == set(sorts) - ascending, path
        for sort in sorts:
            listed = await client.get(path, headers=admin_headers, params={"sort": sort, "per_page": 1})
            assert listed.status_code == 200, (path, sort, listed.text)
        filters = set(query) - {"page", "per_page", "sort"}
        assert filters, path
        for name in filters:
            refused = await client.get(path, headers=admin_headers, params={name: _violating(query[name])})
            assert refused.status_code == 400, (path, name, refused.text)
            assert set(refused.json()["error"]["fields"]) == {name}, (path, name)


class _Thing(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1)]
    size: int = 1


class _Other(msgspec.Struct, kw_only=True):
    colour: str


class _Reply(msgspec.Struct):
    ok: bool


def test_bodies_queries_and_responses_can_be_declared_or_inferred() -> None:
    @post("/inferred", status_code=200)
    async def inferred(body: RawBody) -> _Reply:
        decode(body, _Thing)
        return _Reply(True)

    @post("/optional", status_code=200)
    async def optional(body: RawBody) -> _Reply:
        decode(body or b"{}", _Other)
        return _Reply(True)

    @post("/declared", opt=openapi.doc(body=(_Thing, _Other), responses={202: _Reply, 204: None}))
    async def declared(body: RawBody) -> None:
        return None

    @get("/listed", opt=openapi.doc(query={"colour": str}))
    async def listed() -> Page[_Reply]:
        raise NotImplementedError

    @get("/registered")
    async def registered() -> _Reply:
        return _Reply(True)

    openapi.register("GET", "/registered", responses={200: {"text/csv": str}}, errors=(409,))
    try:
        app = Litestar([inferred, optional, declared, listed, registered], openapi_config=openapi.config())
        document = openapi.document(app)
    finally:
        del openapi.REGISTRY[("GET", "/registered")]
    validate(document)
    paths, schemas = document["paths"], document["components"]["schemas"]

    body = paths["/inferred"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/_Thing"}
    assert schemas["_Thing"]["required"] == ["name"]
    assert schemas["_Thing"]["properties"]["name"]["minLength"] == 1
    assert paths["/optional"]["post"]["requestBody"]["required"] is False

    declared_op = paths["/declared"]["post"]
    assert declared_op["requestBody"]["content"]["application/json"]["schema"] == {
        "anyOf": [{"$ref": "#/components/schemas/_Thing"}, {"$ref": "#/components/schemas/_Other"}]
    }
    assert declared_op["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/_Reply"
    }
    assert "content" not in declared_op["responses"]["204"]
    assert {"400", "404", "413", "500"} <= set(declared_op["responses"])
    assert "401" not in declared_op["responses"]  # no token taken

    names = [p["name"] for p in paths["/listed"]["get"]["parameters"] if p["in"] == "query"]
    assert names == ["page", "per_page", "sort", "colour"]

    registered_op = paths["/registered"]["get"]
    assert registered_op["responses"]["200"]["content"] == {"text/csv": {"schema": {"type": "string"}}}
    assert "409" in registered_op["responses"]

    with pytest.raises(TypeError):
        openapi.doc(bodies=_Thing)


# --- schemathesis against a control plane of its own -----------------------------------------


@dataclass(frozen=True)
class Target:
    url: str
    admin: dict[str, str]
    agent: dict[str, str]
    spare_tokens: list[str]  # user tokens for logout, which revokes the token it is called with


def _login(url: str) -> str:
    response = httpx.post(
        f"{url}/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}, timeout=30
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["user_token"]
    return token


@pytest.fixture(scope="module")
async def private_database(service_urls: ServiceUrls) -> AsyncIterator[str]:
    async with scratch_database(service_urls.database_url, "iron_openapi") as url:
        yield url


@pytest.fixture(scope="module")
async def target(private_database: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Target]:
    """A control plane on a database and a Valkey of its own, with a provider and an agent."""
    valkey = EmbeddedValkey(Path(tmp_path_factory.mktemp("openapi-valkey")))
    try:
        env = {
            "DATABASE_URL": private_database,
            "REDIS_URL": valkey.start(),
            "IRON_BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
            "IRON_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "IRON_SWEEP_INTERVAL": "3600",
            "IRON_RATE_LIMITS_SCALE": "1000",  # limits stay on (and their headers checked), not hit
            "IRON_DB_POOL_MIN": "1",
            "IRON_DB_POOL_MAX": "4",  # PostgreSQL's connections are shared with the rest of the suite
        }
        async with control_planes(env, tmp_path_factory.mktemp("openapi-logs"), "openapi") as (url,):
            yield _target(url)
    finally:
        valkey.stop()


def _target(url: str) -> Target:
    """Admin tokens, a provider and an agent on the control plane at ``url``."""
    tokens = [_login(url) for _ in range(EXAMPLES + 3)]
    admin = {"Authorization": f"Bearer {tokens.pop()}"}
    provider = httpx.post(f"{url}/api/v1/providers", headers=admin, json=provider_body("openapi-provider"))
    assert provider.status_code == 201, provider.text
    created = httpx.post(
        f"{url}/api/v1/agents",
        headers=admin,
        json={"name": "openapi-agent", "budget": 1000, "providers": [provider.json()["id"]]},
    )
    assert created.status_code == 201, created.text
    agent = {"Authorization": f"Bearer {created.json()['ic_token']['token']}"}
    return Target(url, admin, agent, tokens)


def _auth_for(target: Target, operation: Any) -> Callable[[], dict[str, str]]:
    security = operation.definition.raw.get("security") or []
    if any("IcToken" in requirement for requirement in security):
        return lambda: target.agent
    if operation.method.upper() == "POST" and operation.path == "/api/v1/auth/logout":

        def spare() -> dict[str, str]:
            if not target.spare_tokens:
                reject()
            return {"Authorization": f"Bearer {target.spare_tokens.pop()}"}

        return spare
    return lambda: target.admin


def _fuzz(target: Target, operation: Any, mode: GenerationMode, examples: int) -> str | None:
    """Run one operation; the failure report, or None."""
    headers = _auth_for(target, operation)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,  # the same examples every run: a failure reproduces, CI never flakes
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(base_url=target.url, headers=headers(), timeout=30)
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:  # nothing to vary (no input), or no invalid input exists
        return None
    except BaseException as exc:  # schemathesis reports as an exception group
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return f"{operation.label} ({mode.value}):\n{exc}"
    return None


def _known_ids(target: Target, operations: list[Any]) -> Iterator[tuple[Any, dict[str, str]]]:
    """GET operations with path parameters, filled with ids of resources that exist."""
    lists: dict[str, str | None] = {}
    by_name: dict[str, str] = {}

    def first_id(collection: str) -> str | None:
        if collection not in lists:
            response = httpx.get(f"{target.url}{collection}", headers=target.admin, timeout=30)
            body = response.json() if response.status_code == 200 else None
            data = body.get("data") if isinstance(body, dict) else body
            item = data[0] if isinstance(data, list) and data else None
            lists[collection] = item.get("id") if isinstance(item, dict) else None
        return lists[collection]

    for operation in operations:
        if operation.method.upper() != "GET" or "{" not in operation.path:
            continue
        values: dict[str, str] = {}
        for match in re.finditer(r"\{(\w+)\}", operation.path):
            collection = operation.path[: match.start()].rstrip("/").format(**values)
            value = first_id(collection) or by_name.get(match.group(1))
            if value is None:
                break
            values[match.group(1)] = by_name.setdefault(match.group(1), value)
        else:
            yield operation, values


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_response_off_its_schema(target: Target) -> None:
    schema = schemathesis.openapi.from_url(f"{target.url}/schema/openapi.json")
    schema.config.generation.update(allow_x00=ALLOW_NUL)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40
    started = time.monotonic()
    failures = [
        failure
        for operation in operations
        for mode, examples in (
            (GenerationMode.POSITIVE, EXAMPLES),
            (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES),
        )
        if (failure := _fuzz(target, operation, mode, examples)) is not None
    ]
    checked = 0
    for operation, values in _known_ids(target, operations):
        case = operation.Case(path_parameters=values)
        response = case.call(base_url=target.url, headers=target.admin, timeout=30)
        checked += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            failures.append(f"{operation.label} with existing ids {values}:\n{exc}")
    assert checked >= 5  # users, providers, agents, ... were found and read back
    assert not failures, "\n\n".join(failures)
    assert time.monotonic() - started < 120


def test_nul_characters_in_text_are_rejected_not_500(target: Target) -> None:
    for method, path, body in (
        ("POST", "/api/v1/projects", {"name": "nul\u0000name"}),
        ("POST", "/api/v1/agents", {"name": "nul\u0000name", "budget": 1, "providers": []}),
        ("GET", "/api/v1/agents?search=nul%00", None),
    ):
        response = httpx.request(method, f"{target.url}{path}", headers=target.admin, json=body, timeout=30)
        assert response.status_code == 400, f"{method} {path}: {response.status_code} {response.text}"


def test_a_page_far_past_the_end_is_not_a_server_error(target: Target) -> None:
    """Schemathesis finds this with more examples (page=57384329712178741248 on every list)."""
    for path in ("/api/v1/agents", "/api/v1/users", "/api/v1/audit-logs"):
        response = httpx.get(
            f"{target.url}{path}", headers=target.admin, params={"page": str(2**63), "per_page": "100"}
        )
        assert response.status_code < 500, f"{path}: {response.status_code} {response.text}"
