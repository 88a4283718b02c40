"""Projects: everyone reads, admins create and update; agents belong to a project.

A project's counts and totals cover its live agents that the reader may read:
every agent for an admin, their own for a user or viewer.
"""

import secrets
from typing import Any

import asyncpg
import httpx
import pytest

from iron import ids
from tests.conftest import open_lease
from tests.control_plane.helpers import (
    Roles,
    assert_error,
    assert_one_audit,
    assert_refused,
    create_agent,
    create_project,
    fingerprint,
    make_roles,
    usage,
)

SHAPE = {
    "id",
    "name",
    "description",
    "agent_count",
    "user_count",
    "budget",
    "spent",
    "created_at",
    "updated_at",
}


async def test_an_admin_creates_a_project_with_one_audit_entry(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str]
) -> None:
    name = f"Production {secrets.token_hex(3)}"
    response = await client.post(
        "/api/v1/projects", headers=admin_headers, json={"name": name, "description": "the money makers"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == SHAPE
    assert ids.is_valid(ids.PROJECT, body["id"])
    assert (body["name"], body["description"]) == (name, "the money makers")
    assert (body["agent_count"], body["user_count"], body["budget"], body["spent"]) == (0, 0, 0.0, 0.0)
    assert body["created_at"].endswith("Z")
    await assert_one_audit(pool, response, "PROJECT_CREATED", body["id"])
    got = await client.get(f"/api/v1/projects/{body['id']}", headers=admin_headers)
    assert got.json() == body
    # names are unique, whatever their case
    clash = await client.post("/api/v1/projects", headers=admin_headers, json={"name": name.upper()})
    await assert_refused(pool, clash, 409, "RESOURCE_CONFLICT")


async def test_only_admins_create_and_update_projects(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], roles: Roles
) -> None:
    project = await create_project(client, admin_headers)
    before = await fingerprint(pool)
    for person in (roles.owner, roles.viewer):
        created = await client.post("/api/v1/projects", headers=person.headers, json={"name": "mine"})
        await assert_refused(pool, created, 403, "PERMISSION_DENIED")
        updated = await client.put(
            f"/api/v1/projects/{project['id']}", headers=person.headers, json={"name": "x"}
        )
        await assert_refused(pool, updated, 403, "PERMISSION_DENIED")
        # but everyone reads
        assert (
            await client.get(f"/api/v1/projects/{project['id']}", headers=person.headers)
        ).status_code == 200
    assert await fingerprint(pool) == before


@pytest.mark.parametrize(
    ("method", "body", "fields"),
    [
        pytest.param("POST", {"name": "", "description": "d" * 1001}, {"name", "description"}, id="create-2"),
        pytest.param("POST", {}, {"name"}, id="create-missing"),
        pytest.param("POST", {"name": 5}, {"name"}, id="create-type"),
        pytest.param("PUT", {"name": "", "description": 7}, {"name", "description"}, id="update-2"),
        pytest.param("PUT", {}, {"body"}, id="update-empty"),
        pytest.param("PUT", {"agents": []}, {"body"}, id="update-unknown-field"),
    ],
)
async def test_a_bad_body_is_400_naming_every_field(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    admin_headers: dict[str, str],
    method: str,
    body: dict[str, Any],
    fields: set[str],
) -> None:
    path = "/api/v1/projects"
    if method == "PUT":
        path = f"{path}/{(await create_project(client, admin_headers))['id']}"
    before = await fingerprint(pool)
    response = await client.request(method, path, headers=admin_headers, json=body)
    error = await assert_refused(pool, response, 400, "VALIDATION_ERROR")
    assert set(error["fields"]) == fields, error
    assert await fingerprint(pool) == before


async def test_update_renames_and_redescribes_with_before_and_after(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str]
) -> None:
    project = await create_project(client, admin_headers, description="old words")
    other = await create_project(client, admin_headers)
    path = f"/api/v1/projects/{project['id']}"
    new_name = f"renamed-{secrets.token_hex(3)}"
    response = await client.put(path, headers=admin_headers, json={"name": new_name})
    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["description"]) == (new_name, "old words")
    assert response.json()["updated_at"] > project["updated_at"]
    entry = await assert_one_audit(pool, response, "PROJECT_UPDATED", project["id"])
    assert project["name"] in entry["changes"]
    assert new_name in entry["changes"]
    cleared = await client.put(path, headers=admin_headers, json={"description": None})
    assert cleared.status_code == 200, cleared.text
    assert "description" not in cleared.json()
    before = await fingerprint(pool)
    clash = await client.put(path, headers=admin_headers, json={"name": other["name"]})
    await assert_refused(pool, clash, 409, "RESOURCE_CONFLICT")
    missing = await client.put(
        f"/api/v1/projects/{ids.new_id(ids.PROJECT)}", headers=admin_headers, json={"name": "z"}
    )
    await assert_refused(pool, missing, 404, "RESOURCE_NOT_FOUND")
    malformed = await client.put("/api/v1/projects/proj_1", headers=admin_headers, json={"name": "z"})
    assert set((await assert_refused(pool, malformed, 400, "VALIDATION_ERROR"))["fields"]) == {"project_id"}
    assert await fingerprint(pool) == before
    assert_error(await client.get("/api/v1/projects/nope", headers=admin_headers), 400, "VALIDATION_ERROR")
    assert_error(
        await client.get(f"/api/v1/projects/{ids.new_id(ids.PROJECT)}", headers=admin_headers),
        404,
        "RESOURCE_NOT_FOUND",
    )


async def test_counts_and_totals_cover_the_live_agents_the_reader_may_read(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str], provider_id: str
) -> None:
    roles = await make_roles(client, pool)
    other = await make_roles(client, pool)
    project = await create_project(client, admin_headers)
    in_project = {"project_id": project["id"], "providers": [provider_id]}
    mine = [await create_agent(client, roles.owner.headers, budget=b, **in_project) for b in (10, 20)]
    theirs = await create_agent(client, other.owner.headers, budget=30, **in_project)
    admins = await create_agent(client, admin_headers, budget=40, **in_project)
    await create_agent(client, roles.owner.headers, budget=1000)  # in no project
    doomed = await create_agent(client, other.owner.headers, budget=500, **in_project)
    for agent, cost in ((mine[0], 1.5), (theirs, 2.25), (doomed, 3)):
        lease_id = (await open_lease(client, agent, 5))["lease_id"]
        reported = await client.post(
            "/api/v1/budget/report", headers=agent.headers, json=usage(lease_id, cost)
        )
        assert reported.status_code == 204, reported.text
    deleted = await client.delete(f"/api/v1/agents/{doomed.id}", headers=other.owner.headers)
    assert deleted.status_code == 200, deleted.text

    path = f"/api/v1/projects/{project['id']}"

    def figures(response: httpx.Response) -> tuple[int, int, float, float]:
        assert response.status_code == 200, response.text
        body = response.json()
        return body["agent_count"], body["user_count"], body["budget"], body["spent"]

    assert figures(await client.get(path, headers=admin_headers)) == (4, 3, 100.0, 3.75)
    assert figures(await client.get(path, headers=roles.owner.headers)) == (2, 1, 30.0, 1.5)
    assert figures(await client.get(path, headers=other.owner.headers)) == (1, 1, 30.0, 2.25)
    assert figures(await client.get(path, headers=roles.viewer.headers)) == (0, 0, 0.0, 0.0)
    # the list shows the same figures, scoped the same way
    listed = await client.get(f"/api/v1/projects?search={project['name']}", headers=roles.owner.headers)
    assert [figures_of(p) for p in listed.json()["data"]] == [(2, 1, 30.0, 1.5)]
    # agents belong to it: the agents list filters by project, and an agent can move out
    agents = await client.get(f"/api/v1/agents?project_id={project['id']}", headers=admin_headers)
    assert {a["id"] for a in agents.json()["data"]} == {*(a.id for a in mine), theirs.id, admins.id}
    moved = await client.put(
        f"/api/v1/agents/{mine[1].id}", headers=roles.owner.headers, json={"project_id": None}
    )
    assert moved.status_code == 200, moved.text
    assert figures(await client.get(path, headers=roles.owner.headers)) == (1, 1, 10.0, 1.5)


def figures_of(project: dict[str, Any]) -> tuple[int, int, float, float]:
    return project["agent_count"], project["user_count"], project["budget"], project["spent"]


async def test_the_list_searches_sorts(
    client: httpx.AsyncClient, admin_headers: dict[str, str], roles: Roles
) -> None:
    tag = secrets.token_hex(3)
    made = [await create_project(client, admin_headers, f"{tag}-{n}") for n in (1, 0, 2)]
    headers = roles.viewer.headers
    by_name = (await client.get(f"/api/v1/projects?search={tag.upper()}", headers=headers)).json()
    assert [p["name"] for p in by_name["data"]] == [f"{tag}-0", f"{tag}-1", f"{tag}-2"]
    newest = (await client.get(f"/api/v1/projects?search={tag}&sort=-created_at", headers=headers)).json()
    assert [p["id"] for p in newest["data"]] == [p["id"] for p in reversed(made)]


async def test_an_agent_cannot_join_a_project_that_does_not_exist(
    client: httpx.AsyncClient, pool: asyncpg.Pool, roles: Roles
) -> None:
    before = await fingerprint(pool)
    created = await client.post(
        "/api/v1/agents",
        headers=roles.owner.headers,
        json={"name": "lost", "budget": 1, "project_id": ids.new_id(ids.PROJECT)},
    )
    assert set((await assert_refused(pool, created, 400, "VALIDATION_ERROR"))["fields"]) == {"project_id"}
    assert await fingerprint(pool) == before
