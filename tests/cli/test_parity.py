"""CLI-API parity, generated from the OpenAPI document a live control plane serves (real PostgreSQL).

* every user-facing operation has a command (an alias is covered by its canonical twin);
* each command's arguments and options are exactly the operation's path and query parameters
  and body fields (nested ones too), with the same required fields and the same choices;
* a read command's ``--json`` output is the body of the same direct HTTP call;
* every mutating command takes effect, and what it prints is the API's answer.

Excluded, and only these: the budget protocol and usage ingestion (agents' IC tokens, not
people), health and version, and the session endpoints, which are ``iron login``, ``logout``,
``whoami`` and the automatic refresh (tests/cli/test_user_flows.py).
"""

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx
import pytest

from iron.cli.commands import ApiCommand
from iron.cli.main import cli
from iron.cli.params import ApiArgument, ApiOption
from tests.cli.conftest import Servers, invoke
from tests.conftest import FAKE_PROVIDER_KEY, provider_body

EXCLUDED: dict[tuple[str, str], str] = {
    ("GET", "/api/health"): "system",
    ("GET", "/api/version"): "system",
    ("POST", "/api/v1/auth/login"): "iron login",
    ("POST", "/api/v1/auth/refresh"): "automatic in every command",
    ("POST", "/api/v1/auth/logout"): "iron logout",
    ("POST", "/api/v1/auth/validate"): "iron whoami",
    ("POST", "/api/v1/budget/handshake"): "budget protocol",
    ("POST", "/api/v1/budget/report"): "budget protocol",
    ("POST", "/api/v1/budget/refresh"): "budget protocol",
    ("POST", "/api/v1/budget/return"): "budget protocol",
    ("POST", "/api/v1/agents/provider-key"): "budget protocol (the sidecar's)",
    ("POST", "/api/v1/analytics/events"): "usage ingestion (IC token)",
}
_METHODS = ("get", "put", "post", "delete", "patch")
JUSTIFICATION = "Parity test: the agent needs more budget."

Endpoint = tuple[str, str]


@dataclass(frozen=True)
class Operation:
    """One handler: its endpoints (the canonical one and its aliases) and its description."""

    endpoints: tuple[Endpoint, ...]
    spec: dict[str, Any]

    @property
    def mutating(self) -> bool:
        return self.endpoints[0][0] != "GET"


def _operations(document: dict[str, Any]) -> list[Operation]:
    """The document's operations, aliases together: one handler on several paths is documented
    identically on each (same summary, description, parameters and body)."""
    groups: dict[str, list[tuple[Endpoint, dict[str, Any]]]] = {}
    for path, item in document["paths"].items():
        for method in _METHODS:
            if (spec := item.get(method)) is not None:
                same = [spec.get(key) for key in ("summary", "description", "parameters", "requestBody")]
                groups.setdefault(json.dumps(same, sort_keys=True), []).append(((method.upper(), path), spec))
    return [Operation(tuple(e for e, _ in members), members[0][1]) for members in groups.values()]


def _user_facing(document: dict[str, Any]) -> list[Operation]:
    return [op for op in _operations(document) if not any(e in EXCLUDED for e in op.endpoints)]


def _commands() -> dict[Endpoint, ApiCommand]:
    found: dict[Endpoint, ApiCommand] = {}
    for group in cli.commands.values():
        for command in group.commands.values() if isinstance(group, click.Group) else ():
            if isinstance(command, ApiCommand):
                found[(command.op.method, command.op.path)] = command
    return found


def _command_of(op: Operation) -> ApiCommand | None:
    commands = _commands()
    return next((commands[e] for e in op.endpoints if e in commands), None)


@pytest.fixture(scope="module")
def document(servers: Servers) -> dict[str, Any]:
    response = httpx.get(f"{servers.main}/schema/openapi.json", timeout=30)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


# --- shapes: what an operation takes, as the document says and as the command takes it -----------

Shape = dict[str, Any]


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _choices(document: dict[str, Any], schema: dict[str, Any]) -> list[str] | None:
    for member in [schema, *schema.get("anyOf", [])]:
        if "enum" in (resolved := _resolve(document, member)):
            return sorted(map(str, resolved["enum"]))
    return None


def _body_leaves(
    document: dict[str, Any], schema: dict[str, Any], prefix: tuple[str, ...] = (), required: bool = True
) -> dict[str, Any]:
    """``a.b`` -> (required, choices) for every leaf field of a body, nested objects walked."""
    schema = _resolve(document, schema)
    leaves: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        needed = required and name in schema.get("required", [])
        kind = _resolve(document, prop)
        if kind.get("type") == "object" and "properties" in kind:
            leaves.update(_body_leaves(document, kind, (*prefix, name), needed))
        else:
            leaves[".".join((*prefix, name))] = (needed, _choices(document, prop))
    return leaves


def _documented(document: dict[str, Any], spec: dict[str, Any]) -> Shape:
    params = spec.get("parameters", [])
    body = spec.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    return {
        "path": [p["name"] for p in params if p["in"] == "path"],
        "query": {p["name"]: _choices(document, p["schema"]) for p in params if p["in"] == "query"},
        "body": _body_leaves(document, body) if body else {},
    }


def _taken(command: ApiCommand) -> Shape:
    shape: Shape = {"path": [], "query": {}, "body": {}}
    for param in command.params:
        if not isinstance(param, ApiArgument | ApiOption) or param.wire.clears:
            continue
        wire = param.wire
        choices = sorted(param.type.choices) if isinstance(param.type, click.Choice) else None
        if wire.location == "path":
            shape["path"].append(wire.name[0])
        elif wire.location == "query":
            shape["query"][wire.name[0]] = choices
        else:
            shape["body"][".".join(wire.name)] = (wire.required, choices)
    return shape


def test_every_user_facing_operation_has_a_command(document: dict[str, Any]) -> None:
    missing = [op.endpoints for op in _user_facing(document) if _command_of(op) is None]
    assert missing == []


def test_every_parameter_and_body_field_is_an_argument_or_option(document: dict[str, Any]) -> None:
    differences = {}
    for op in _user_facing(document):
        command = _command_of(op)
        assert command is not None
        documented, taken = _documented(document, op.spec), _taken(command)
        if "sort" in documented["query"] and taken["query"].get("sort", ()) is None:
            # the sortable fields are the server's to check (400 naming them); the CLI passes them on
            documented["query"]["sort"] = None
        if documented != taken:
            differences[f"{command.op.resource} {command.op.action}"] = {"api": documented, "cli": taken}
    assert differences == {}


def test_every_command_calls_a_served_operation(document: dict[str, Any]) -> None:
    served = {e for op in _operations(document) for e in op.endpoints}
    unserved = sorted(f"{c.op.resource} {c.op.action}" for e, c in _commands().items() if e not in served)
    assert len(_commands()) >= 55  # the table is all there
    assert unserved == []


def test_every_command_names_its_endpoint_in_its_help() -> None:
    for (method, path), command in _commands().items():
        assert f"Calls: {method} {path}" in (command.help or "")


# --- read commands: --json is the body of the same call ------------------------------------------


@pytest.fixture(scope="module")
def samples(api: httpx.Client) -> dict[str, str]:
    """An existing id for each kind of path parameter, by the path segment before it."""

    def made(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = api.post(path, json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    tag = secrets.token_hex(3)
    provider = made(
        "/api/v1/providers",
        provider_body(f"parity-{tag}"),
    )
    project = made("/api/v1/projects", {"name": f"parity-{tag}"})
    agent = made(
        "/api/v1/agents",
        {"name": f"parity-{tag}", "budget": 10, "providers": [provider["id"]], "project_id": project["id"]},
    )
    request = made(
        "/api/v1/budget-requests",
        {"agent_id": agent["id"], "requested_budget": 20, "justification": JUSTIFICATION},
    )
    return {
        "agents": agent["id"],
        "providers": provider["id"],
        "projects": project["id"],
        "users": made("/api/v1/users", {"email": f"parity-{tag}@example.com", "name": "Parity"})["id"],
        "api-tokens": made("/api/v1/api-tokens", {"name": f"parity-{tag}"})["id"],
        "tokens": agent["ic_token"]["id"],
        "budget-requests": request["id"],
    }


def _filled(path: str, samples: dict[str, str]) -> tuple[str, list[str]]:
    """The path with sample ids in its placeholders, and those ids in order (the arguments)."""
    values: list[str] = []

    def fill(match: re.Match[str]) -> str:
        values.append(samples[match.group(1)])
        return f"{match.group(1)}/{values[-1]}"

    return re.sub(r"([\w-]+)/\{\w+\}", fill, path), values


def _filters(command: ApiCommand) -> tuple[list[str], dict[str, Any]]:
    """Every query option with choices set to its first, and ``--search``: as options and as a query."""
    options: list[str] = []
    query: dict[str, Any] = {}
    for param in command.params:
        if not isinstance(param, ApiOption) or param.wire.location != "query":
            continue
        name = param.wire.name[0]
        if isinstance(param.type, click.Choice) or name == "search":
            value = str(param.type.choices[0]) if isinstance(param.type, click.Choice) else "a"
            options += [param.opts[0], value]
            query[name] = value
    return options, query


def _reads(document: dict[str, Any]) -> Iterator[tuple[ApiCommand, list[str], dict[str, Any]]]:
    """Each served read command with its arguments: plainly, on page 2 of 1-item pages, and filtered."""
    for op in _user_facing(document):
        command = _command_of(op)
        if command is None or op.mutating:
            continue
        yield command, [], {}
        if command.op.paged:
            yield command, ["--page", "2", "--per-page", "1"], {"page": 2, "per_page": 1}
        options, query = _filters(command)
        if query:
            yield command, options, query


def test_read_commands_print_the_api_response(
    document: dict[str, Any], samples: dict[str, str], api: httpx.Client, admin_config: Path
) -> None:
    compared = 0
    for command, options, query in _reads(document):
        op = command.op
        path, arguments = _filled(op.path, samples)
        result = invoke(admin_config, op.resource, op.action, *arguments, *options, "--json")
        assert result.exit_code == 0, (op.resource, op.action, result.output)
        expected = api.get(path, params=query)
        assert expected.status_code == 200, expected.text
        if expected.headers["content-type"].startswith("application/json"):
            assert json.loads(result.stdout_bytes) == expected.json(), (op.resource, op.action)
        else:
            assert result.stdout_bytes == expected.content, (op.resource, op.action)
        compared += 1
    assert compared >= 35, compared


# --- mutating commands: the effect, and the printed body is the API's answer ----------------------


class Runner:
    """Runs commands with ``--json`` in-process and notes which operations they called."""

    def __init__(self, config_file: Path) -> None:
        self.config_file = config_file
        self.called: set[Endpoint] = set()

    def __call__(self, resource: str, action: str, *args: str) -> Any:
        result = invoke(self.config_file, resource, action, *args, "--json")
        assert result.exit_code == 0, (resource, action, result.output)
        command = cli.commands[resource].commands[action]  # type: ignore[attr-defined]
        self.called.add((command.op.method, command.op.path))
        return json.loads(result.stdout) if result.stdout.strip() else None


def _without(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in keys}


def _providers_and_agents(iron: Runner, api: httpx.Client, tag: str) -> dict[str, Any]:
    provider = iron(
        "providers", "create", "--name", f"p-{tag}", "--type", "anthropic",
        "--endpoint", "https://api.anthropic.example", "--api-key", FAKE_PROVIDER_KEY, "--models", "claude-x",
    )  # fmt: skip
    assert _without(api.get(f"/api/v1/providers/{provider['id']}").json(), "usage") == provider
    updated = iron("providers", "update", provider["id"], "--name", f"p2-{tag}", "--status", "disabled")
    assert updated["name"] == f"p2-{tag}"
    assert updated["status"] == "disabled"
    assert _without(api.get(f"/api/v1/providers/{provider['id']}").json(), "usage") == updated
    iron("providers", "update", provider["id"], "--status", "active")

    agent = iron("agents", "create", "--name", f"a-{tag}", "--budget", "25", "--providers", provider["id"])
    assert agent["ic_token"]["token"].startswith("ic_")
    assert api.get(f"/api/v1/agents/{agent['id']}").json() == _without(agent, "ic_token")
    changed = iron("agents", "update", agent["id"], "--description", "parity", "--tags", "x", "--tags", "y")
    assert changed["tags"] == ["x", "y"]
    assert api.get(f"/api/v1/agents/{agent['id']}").json() == changed
    cleared = iron("agents", "update", agent["id"], "--clear-description")
    assert "description" not in cleared
    assert api.get(f"/api/v1/agents/{agent['id']}").json() == cleared
    assigned = iron("agents", "assign-providers", agent["id"], "--providers", provider["id"])
    assert api.get(f"/api/v1/agents/{agent['id']}/providers").json() == assigned
    assert iron("agents", "remove-provider", agent["id"], provider["id"]) is None
    assert api.get(f"/api/v1/agents/{agent['id']}/providers").json()["providers"] == []
    assert iron("agents", "assign-providers", agent["id"])["providers"] == []  # no --providers: none

    doomed = iron("agents", "create", "--name", f"d-{tag}", "--budget", "1")
    deleted = iron("agents", "delete", doomed["id"])
    assert deleted["id"] == doomed["id"]
    assert deleted["status"] == "deleted"
    assert deleted["ic_token_revoked"]
    assert api.get(f"/api/v1/agents/{doomed['id']}").status_code == 404
    gone = iron("providers", "delete", provider["id"])
    assert gone["deleted"] is True
    assert gone["affected_agents"] == []
    assert api.get(f"/api/v1/providers/{provider['id']}").status_code == 404
    return agent


def _ic_tokens(iron: Runner, api: httpx.Client, agent_id: str) -> None:
    assert iron("ic-tokens", "agent-delete", agent_id) is None
    assert api.get(f"/api/v1/agents/{agent_id}/ic-token").status_code == 404
    created = iron("ic-tokens", "create", "--agent-id", agent_id)
    assert created["agent_id"] == agent_id
    assert api.get(f"/api/v1/tokens/{created['id']}").json()["status"] == "active"
    rotated = iron("ic-tokens", "rotate", created["id"])
    assert rotated["old_token_invalidated"] is True
    assert api.get(f"/api/v1/tokens/{created['id']}").json()["status"] == "revoked"
    assert iron("ic-tokens", "delete", rotated["ic_token"]["id"]) is None
    assert api.get(f"/api/v1/tokens/{rotated['ic_token']['id']}").json()["status"] == "revoked"
    issued = iron("ic-tokens", "agent-create", agent_id)
    assert api.get(f"/api/v1/agents/{agent_id}/ic-token").json()["id"] == issued["id"]
    regenerated = iron("ic-tokens", "regenerate", agent_id)
    assert api.get(f"/api/v1/agents/{agent_id}/ic-token").json()["id"] == regenerated["ic_token"]["id"]


def _money(iron: Runner, api: httpx.Client, agent_id: str) -> None:
    raised = iron("limits", "set", agent_id, "--budget", "40", "--reason", "parity")
    assert raised["budget"] == 40
    assert api.get(f"/api/v1/agents/{agent_id}").json()["budget"] == 40
    lowered = iron("limits", "set", agent_id, "--budget", "30", "--force")
    assert lowered["previous_budget"] == 40
    assert lowered["budget"] == 30

    asked = iron(
        "budget-requests", "create", "--agent-id", agent_id, "--requested-budget", "50",
        "--justification", JUSTIFICATION,
    )  # fmt: skip
    assert api.get(f"/api/v1/budget-requests/{asked['id']}").json() == asked
    approved = iron(
        "budget-requests", "approve", asked["id"], "--approved-budget", "45", "--review-notes", "ok"
    )
    assert approved["status"] == "approved"
    assert approved["approved_budget"] == 45
    assert api.get(f"/api/v1/budget-requests/{asked['id']}").json() == approved
    assert api.get(f"/api/v1/agents/{agent_id}").json()["budget"] == 45

    for action, extra, status in (
        ("reject", ["--review-notes", "not now"], "rejected"),
        ("cancel", [], "cancelled"),
    ):
        pending = iron(
            "budget-requests", "create", "--agent-id", agent_id, "--requested-budget", "60",
            "--justification", JUSTIFICATION,
        )  # fmt: skip
        reviewed = iron("budget-requests", action, pending["id"], *extra)
        assert reviewed["status"] == status
        assert api.get(f"/api/v1/budget-requests/{pending['id']}").json() == reviewed


def _people(iron: Runner, api: httpx.Client, servers: Servers, tag: str) -> None:
    user = iron("users", "create", "--email", f"u-{tag}@example.com", "--name", "U", "--role", "viewer")
    assert user["temporary_password"]
    assert api.get(f"/api/v1/users/{user['id']}").json() == _without(user, "temporary_password")
    promoted = iron("users", "set-role", user["id"], "--role", "user")
    assert promoted["role"] == "user"
    assert api.get(f"/api/v1/users/{user['id']}").json() == promoted
    assert iron("users", "suspend", user["id"])["status"] == "suspended"
    assert api.get(f"/api/v1/users/{user['id']}").json()["status"] == "suspended"
    assert iron("users", "activate", user["id"]) == api.get(f"/api/v1/users/{user['id']}").json()
    reset = iron("users", "reset-password", user["id"])
    login = {"email": user["email"], "password": reset["temporary_password"]}
    assert httpx.post(f"{servers.main}/api/v1/auth/login", json=login).status_code == 200
    assert iron("users", "delete", user["id"]) is None
    assert api.get(f"/api/v1/users/{user['id']}").status_code == 404

    token = iron("api-tokens", "create", "--name", f"t-{tag}", "--expires-in-days", "7")
    assert api.get(f"/api/v1/api-tokens/{token['id']}").json() == _without(token, "token")

    def works(value: str) -> bool:
        answer = httpx.get(f"{servers.main}/api/v1/agents", headers={"Authorization": f"Bearer {value}"})
        return answer.status_code == 200

    assert works(token["token"])
    rotated = iron("api-tokens", "rotate", token["id"])
    assert works(rotated["token"])
    assert not works(token["token"])
    assert iron("api-tokens", "revoke", token["id"]) is None
    assert not works(rotated["token"])

    project = iron("projects", "create", "--name", f"pr-{tag}", "--description", "parity")
    assert api.get(f"/api/v1/projects/{project['id']}").json() == project
    renamed = iron("projects", "update", project["id"], "--name", f"pr2-{tag}")
    assert renamed["name"] == f"pr2-{tag}"
    assert api.get(f"/api/v1/projects/{project['id']}").json() == renamed


def test_mutating_commands_take_effect_and_print_the_response(
    document: dict[str, Any], api: httpx.Client, admin_config: Path, servers: Servers
) -> None:
    iron, tag = Runner(admin_config), secrets.token_hex(3)
    agent = _providers_and_agents(iron, api, tag)
    _ic_tokens(iron, api, agent["id"])
    _money(iron, api, agent["id"])
    _people(iron, api, servers, tag)
    untested = [
        op.endpoints for op in _user_facing(document) if op.mutating and not iron.called & set(op.endpoints)
    ]
    assert untested == []
