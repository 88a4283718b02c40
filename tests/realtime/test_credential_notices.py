"""Sockets end as soon as their credential does, on every replica, through the user's control channel.

The replicas here check credentials only once an hour, so only the notice can close a socket
within a test: what the tests assert is the close code and reason, never a time. A socket that
must stay open is shown to outlive the notice by heartbeats that reach it after a sibling
socket (same user, same notice) was closed.
"""

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from iron.realtime import CLOSE_UNAUTHORIZED, AgentUpdated, Error, Heartbeat, StateUpdate
from tests.conftest import control_planes, until_lock_waiters
from tests.realtime.conftest import (
    PASSWORD,
    REALTIME_ENV,
    Feed,
    make_person,
    open_feed,
    own_agent,
    session_token,
)

NEVER_S = "3600"  # the periodic recheck: never, within a test


@pytest.fixture(scope="module")
async def slow_recheck(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[str]]:
    """Two replicas whose periodic credential check never comes during a test."""
    settings = {**env, **REALTIME_ENV, "IRON_WS_RECHECK_S": NEVER_S}
    log_dir = tmp_path_factory.mktemp("slow-recheck")
    async with control_planes(settings, log_dir, "slow-a", "slow-b") as urls:
        yield urls


async def _connected(reader: Feed) -> None:
    await reader.wait_for(lambda ms: any(isinstance(m, StateUpdate) for m in ms))


async def _ended_with(reader: Feed, code: str) -> None:
    assert await reader.wait_closed() == CLOSE_UNAUTHORIZED
    last = reader.messages[-1]
    assert isinstance(last, Error), reader.raw[-1]
    assert last.error.code == code, reader.raw[-1]


async def _outlives(reader: Feed) -> None:
    """Three more heartbeats: the socket was still open well after the notice was handled."""
    seen = len(reader.of_type(Heartbeat))
    await reader.wait_for(lambda ms: sum(isinstance(m, Heartbeat) for m in ms) >= seen + 3)
    assert not reader.closed.is_set()


async def test_logout_ends_only_that_sessions_sockets_and_suspension_ends_all(
    slow_recheck: list[str], client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    person = await make_person(client, admin_headers)
    other_session = await session_token(client, person.email)
    api_token = await client.post("/api/v1/api-tokens", headers=person.headers, json={"name": "feed"})
    assert api_token.status_code == 201, api_token.text
    replica_a, replica_b = slow_recheck
    async with (
        open_feed(replica_a, person.token) as leaving_a,
        open_feed(replica_b, person.token) as leaving_b,
        open_feed(replica_a, other_session) as staying,
        open_feed(replica_b, api_token.json()["token"]) as by_api_token,
    ):
        for reader in (leaving_a, leaving_b, staying, by_api_token):
            await _connected(reader)
        assert (await client.post("/api/v1/auth/logout", headers=person.headers)).status_code == 204
        await _ended_with(leaving_a, "AUTH_INVALID_TOKEN")
        await _ended_with(leaving_b, "AUTH_INVALID_TOKEN")
        await _outlives(staying)
        await _outlives(by_api_token)

        suspended = await client.put(f"/api/v1/users/{person.id}/suspend", headers=admin_headers)
        assert suspended.status_code == 200, suspended.text
        await _ended_with(staying, "AUTH_INVALID_TOKEN")
        await _ended_with(by_api_token, "AUTH_INVALID_TOKEN")


async def test_a_reused_refresh_token_ends_its_sessions_sockets_only(
    slow_recheck: list[str], client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    person = await make_person(client, admin_headers)
    login = await client.post("/api/v1/auth/login", json={"email": person.email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    session = login.json()
    async with (
        open_feed(slow_recheck[0], session["user_token"]) as ended,
        open_feed(slow_recheck[1], person.token) as other_session,
    ):
        await _connected(ended)
        await _connected(other_session)
        once = {"refresh_token": session["refresh_token"]}
        assert (await client.post("/api/v1/auth/refresh", json=once)).status_code == 200
        assert (await client.post("/api/v1/auth/refresh", json=once)).status_code == 401  # a thief's replay
        await _ended_with(ended, "AUTH_INVALID_TOKEN")
        await _outlives(other_session)


async def test_a_revoked_api_token_ends_its_sockets_only(
    slow_recheck: list[str], client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    person = await make_person(client, admin_headers)
    issued = await client.post("/api/v1/api-tokens", headers=person.headers, json={"name": "feed"})
    assert issued.status_code == 201, issued.text
    async with (
        open_feed(slow_recheck[0], issued.json()["token"]) as by_api_token,
        open_feed(slow_recheck[1], person.token) as by_session,
    ):
        await _connected(by_api_token)
        await _connected(by_session)
        revoked = await client.delete(f"/api/v1/api-tokens/{issued.json()['id']}", headers=person.headers)
        assert revoked.status_code == 204, revoked.text
        await _ended_with(by_api_token, "AUTH_INVALID_TOKEN")
        await _outlives(by_session)


async def test_a_demoted_admin_leaves_the_admins_channel(
    slow_recheck: list[str], client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    admin = await make_person(client, admin_headers, role="admin")
    async with open_feed(slow_recheck[1], admin.token) as reader:
        await _connected(reader)
        demoted = await client.put(
            f"/api/v1/users/{admin.id}/role", headers=admin_headers, json={"role": "user"}
        )
        assert demoted.status_code == 200, demoted.text
        await _ended_with(reader, "AUTH_ROLE_CHANGED")


async def test_a_deleted_user_is_cut_off_and_the_admin_sees_their_agents_change_hands(
    slow_recheck: list[str], client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    person = await make_person(client, admin_headers)
    agent = await own_agent(client, person)
    admin_token = admin_headers["Authorization"].removeprefix("Bearer ")
    validated = await client.post("/api/v1/auth/validate", headers=admin_headers)
    admin_id = validated.json()["user"]["id"]
    async with (
        open_feed(slow_recheck[0], person.token) as deleted_feed,
        open_feed(slow_recheck[1], admin_token) as admin_feed,
    ):
        await _connected(deleted_feed)
        await _connected(admin_feed)
        response = await client.delete(f"/api/v1/users/{person.id}", headers=admin_headers)
        assert response.status_code == 204, response.text
        await _ended_with(deleted_feed, "AUTH_INVALID_TOKEN")

        def handed_over(ms: list[object]) -> bool:
            return any(
                isinstance(m, AgentUpdated) and m.agent_id == agent.id and m.agent.owner_id == admin_id
                for m in ms
            )

        await admin_feed.wait_for(handed_over)
    assert [m.action for m in admin_feed.of_type(AgentUpdated) if m.agent_id == agent.id][-1] == "updated"


async def test_a_credential_that_ends_while_the_socket_is_set_up_closes_it_without_a_notice(
    slow_recheck: list[str], client: httpx.AsyncClient, admin_headers: dict[str, str], pool: asyncpg.Pool
) -> None:
    """A notice published after the handshake's check but before the socket subscribed never
    reaches it. The socket checks its credential once it is subscribed, so the change counts.

    The test holds the agents table, which the socket's first message reads after it has
    subscribed, and meanwhile suspends the user straight in the database: no notice at all.
    """
    person = await make_person(client, admin_headers)
    async with pool.acquire() as holder:
        lock = holder.transaction()
        await lock.start()
        held = True
        try:
            await holder.execute("LOCK TABLE agents IN ACCESS EXCLUSIVE MODE")
            async with open_feed(slow_recheck[0], person.token) as reader:
                await until_lock_waiters(pool, table="agents")  # the socket is past auth and subscribed
                await pool.execute("UPDATE users SET status = 'suspended' WHERE id = $1", person.id)
                await lock.commit()
                held = False
                await _connected(reader)
                await _ended_with(reader, "AUTH_INVALID_TOKEN")
        finally:
            if held:
                await lock.rollback()
