"""What the locust scenarios share: their options, the final CSVs, and the admin's session.

Locust loads every ``*.py`` here not starting with ``_`` as a locustfile, so this
module is imported by the scenarios rather than run as one; being imported once,
it adds its options to locust's parser once however many scenarios are loaded.
"""

import csv
from dataclasses import dataclass
from typing import Any

import msgspec
from gevent.lock import Semaphore
from locust import FastHttpUser, events
from locust.argument_parser import LocustArgumentParser
from locust.contrib.fasthttp import FastResponse
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from control_plane.auth.schemas import LoginRequest, LoginResponse, RefreshRequest


@dataclass
class _Session:
    """The admin's session, one per locust process and shared by its users (see :func:`request`)."""

    authorization: str = ""
    refresh_token: str = ""


_session = _Session()
_session_lock = Semaphore()
_JSON = {"Content-Type": "application/json"}


@events.init_command_line_parser.add_listener
def _options(parser: LocustArgumentParser) -> None:
    parser.add_argument(
        "--sidecar-urls",
        default="",
        help="comma-separated sidecar base URLs the runtime users spread over (default: --host)",
    )
    parser.add_argument(
        "--llm-latency-ms",
        type=int,
        nargs=2,
        default=[50, 150],
        metavar=("LOW", "HIGH"),
        help="simulated LLM call between reserve and commit, uniform in [LOW, HIGH] ms",
    )
    parser.add_argument("--cost-usd", type=float, default=0.001, help="what each simulated LLM call costs")
    # the same variables the control plane creates its bootstrap admin from
    parser.add_argument("--admin-email", env_var="IRON_BOOTSTRAP_ADMIN_EMAIL", default="admin@example.com")
    parser.add_argument(
        "--admin-password", env_var="IRON_BOOTSTRAP_ADMIN_PASSWORD", default="", is_secret=True
    )


@events.init.add_listener
def _final_csv_at_quit(environment: Environment, **_kwargs: Any) -> None:
    """locust rewrites its CSVs once a second while running, but not after the last tasks have
    finished (its issue 1806): at quit, when every user has stopped, write the final figures,
    so that they agree with what the servers counted."""
    prefix = environment.parsed_options.csv_prefix if environment.parsed_options else None
    if not prefix:
        return

    def write(**_kwargs: Any) -> None:
        stats = StatsCSV(environment, PERCENTILES_TO_REPORT)
        for suffix, rows in (("_stats.csv", stats.requests_csv), ("_failures.csv", stats.failures_csv)):
            with open(prefix + suffix, "w", newline="") as file:
                rows(csv.writer(file))

    environment.events.quit.add_listener(write)


def options(user: FastHttpUser) -> Any:
    return user.environment.parsed_options


def _post(user: FastHttpUser, path: str, body: msgspec.Struct) -> FastResponse:
    reply: FastResponse = user.client.post(path, data=msgspec.json.encode(body), headers=_JSON)
    return reply


def _sign_in(user: FastHttpUser) -> None:
    """Renew the session with its refresh token, or log in when there is none or it is refused
    (expired or revoked); the caller holds ``_session_lock``."""
    reply = None
    if _session.refresh_token:
        reply = _post(user, "/api/v1/auth/refresh", RefreshRequest(refresh_token=_session.refresh_token))
    if reply is None or not reply.ok:
        opts = options(user)
        reply = _post(
            user, "/api/v1/auth/login", LoginRequest(email=opts.admin_email, password=opts.admin_password)
        )
        reply.raise_for_status()
    session = msgspec.json.decode(reply.content, type=LoginResponse)
    _session.authorization = f"Bearer {session.user_token}"
    _session.refresh_token = session.refresh_token


def _authorization(user: FastHttpUser, stale: str = "") -> str:
    """The session's bearer header: signed in on first use, and renewed when ``stale`` (a header
    just refused) is still the current one, so one refusal renews once however many users saw it."""
    with _session_lock:
        if _session.authorization == stale:
            _sign_in(user)
        return _session.authorization


def request(
    user: FastHttpUser,
    method: str,
    path: str,
    *,
    name: str,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> FastResponse:
    """A request as the admin. One login per locust process, shared by its users: logging every
    user in at once would meet the control plane's login throttle, which counts an attempt from
    an address until its password is checked and refuses a sixth in flight; and the scenarios
    measure the API, not argon2. A 401 (the access token expired, after an hour by default, or
    was revoked) renews the session and the request is sent once more."""

    def send(authorization: str) -> FastResponse:
        reply: FastResponse = user.client.request(
            method, path, name=name, headers={**(headers or {}), "Authorization": authorization}, **kwargs
        )
        return reply

    authorization = _authorization(user)
    reply = send(authorization)
    if reply.status_code == 401:
        reply = send(_authorization(user, stale=authorization))
    return reply
