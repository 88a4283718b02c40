"""What the locust scenarios share: their options, the final CSVs, and the admin's login.

Locust loads every ``*.py`` here not starting with ``_`` as a locustfile, so this
module is imported by the scenarios rather than run as one; being imported once,
it adds its options to locust's parser once however many scenarios are loaded.
"""

import csv
from typing import Any

from gevent.lock import Semaphore
from locust import FastHttpUser, events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

_session: dict[str, str] = {}
_login_lock = Semaphore()


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


def log_in(user: FastHttpUser) -> dict[str, str]:
    """The headers that authenticate as the admin: one login per locust process, shared by its
    users. Logging every user in at once would meet the control plane's login throttle, which
    counts an attempt from an address until its password is checked and refuses a sixth in
    flight; and the scenarios measure the API, not argon2."""
    with _login_lock:
        if not _session:
            opts = options(user)
            body = {"email": opts.admin_email, "password": opts.admin_password}
            reply = user.client.post("/api/v1/auth/login", json=body)
            reply.raise_for_status()
            _session["Authorization"] = f"Bearer {reply.json()['user_token']}"
    return dict(_session)
