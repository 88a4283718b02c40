"""The list contract (DESIGN.md section 3) on GET /api/v1/agents: paging, sorting, filters, search, scope."""

import secrets
from typing import Any

import asyncpg
import httpx

from control_plane.auth.secrets import hash_password
from iron import ids
from tests.conftest import login


async def _user(pool: asyncpg.Pool, client: httpx.AsyncClient, role: str = "user") -> dict[str, str]:
    email, password = f"{role}-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(12)
    await pool.execute(
        "INSERT INTO users (id, email, name, role, password_hash) VALUES ($1, $2, $3, $4, $5)",
        ids.new_id(ids.USER),
        email,
        role,
        role,
        await hash_password(password),
    )
    return await login(client, email, password)


async def _create(client: httpx.AsyncClient, headers: dict[str, str], name: str, budget: float) -> str:
    response = await client.post(
        "/api/v1/agents", headers=headers, json={"name": name, "budget": budget, "description": "list test"}
    )
    assert response.status_code == 201, response.text
    agent_id: str = response.json()["id"]
    return agent_id


async def test_a_new_user_sees_an_empty_first_page(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    headers = await _user(pool, client)
    response = await client.get("/api/v1/agents", headers=headers)
    assert response.status_code == 200
    assert response.json() == {
        "data": [],
        "pagination": {"page": 1, "per_page": 50, "total": 0, "total_pages": 0},
    }


async def test_pages_sort_search_and_scope(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    owner = await _user(pool, client)
    other = await _user(pool, client)
    tag = secrets.token_hex(3)
    made = [await _create(client, owner, f"{tag}-{n:02d}", budget=n) for n in range(5)]
    await _create(client, owner, f"100%_{tag}", budget=1)  # wildcards are literal in search
    await _create(client, other, f"{tag}-other", budget=1)

    first = (
        await client.get("/api/v1/agents?per_page=2&sort=name&search=" + tag + "-", headers=owner)
    ).json()
    assert [a["id"] for a in first["data"]] == made[:2]
    assert first["pagination"] == {"page": 1, "per_page": 2, "total": 5, "total_pages": 3}
    last = (
        await client.get(f"/api/v1/agents?per_page=2&page=3&sort=name&search={tag}-", headers=owner)
    ).json()
    assert [a["id"] for a in last["data"]] == made[4:]
    past = await client.get(f"/api/v1/agents?per_page=2&page=9&search={tag}-", headers=owner)
    assert past.status_code == 200
    assert past.json()["data"] == []
    assert past.json()["pagination"]["total"] == 5

    by_budget = (await client.get(f"/api/v1/agents?sort=-budget&search={tag}-", headers=owner)).json()
    assert [a["budget"] for a in by_budget["data"]] == [4.0, 3.0, 2.0, 1.0, 0.0]
    literal = (await client.get("/api/v1/agents?search=100%25_", headers=owner)).json()
    assert [a["name"] for a in literal["data"]] == [f"100%_{tag}"]
    upper = (await client.get(f"/api/v1/agents?search={tag.upper()}-0", headers=owner)).json()
    assert upper["pagination"]["total"] == 5  # case-insensitive

    theirs = (await client.get(f"/api/v1/agents?search={tag}", headers=other)).json()
    assert [a["name"] for a in theirs["data"]] == [f"{tag}-other"]


async def test_admins_see_every_owner(
    client: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str]
) -> None:
    tag = secrets.token_hex(3)
    await _create(client, await _user(pool, client), f"{tag}-a", 1)
    await _create(client, await _user(pool, client), f"{tag}-b", 1)
    listed = (await client.get(f"/api/v1/agents?search={tag}", headers=admin_headers)).json()
    assert listed["pagination"]["total"] == 2


async def test_invalid_list_parameters_report_every_field_at_once(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    cases: list[tuple[str, set[str]]] = [
        ("page=0&per_page=200", {"page", "per_page"}),
        ("page=abc&per_page=-1", {"page", "per_page"}),
        ("per_page=0&sort=password_hash", {"per_page", "sort"}),
        ("status=gone&project_id=nope&sort=-nope", {"status", "project_id", "sort"}),
        ("search=" + "x" * 201, {"search"}),
    ]
    for query, fields in cases:
        response = await client.get(f"/api/v1/agents?{query}", headers=admin_headers)
        assert response.status_code == 400, query
        error: dict[str, Any] = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert set(error["fields"]) == fields, (query, error)
