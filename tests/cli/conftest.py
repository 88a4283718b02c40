"""Live control planes for the CLI tests, and two ways to run ``iron``: in-process and as a user does.

Two real control-plane processes share the test database: ``main``, and ``short`` whose access
tokens live two seconds (for the refresh tests). In-process runs (click's CliRunner) keep the
parity checks fast; the user-flow tests run the installed ``iron`` script as a subprocess.
"""

import os
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from iron.cli.main import cli
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, control_planes

SHORT_TTL_S = 2
IRON = Path(sys.executable).with_name("iron")
# variables of the CLI that the outer environment must not lend to a test
CLI_VARIABLES = ("IRON_CONFIG", "IRON_URL", "IRON_PROFILE", "IRON_API_TOKEN", "IRON_PASSWORD", "COLUMNS")


@dataclass(frozen=True)
class Servers:
    main: str
    short: str  # access tokens expire after SHORT_TTL_S


@pytest.fixture(scope="session")
async def servers(
    env: dict[str, str], client: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Servers]:
    """``client`` first: the in-process app has migrated the database and made the admin."""
    log_dir = tmp_path_factory.mktemp("cli-servers")
    short_env = {**env, "IRON_ACCESS_TOKEN_TTL": str(SHORT_TTL_S)}
    async with (
        control_planes(env, log_dir, "cli-main") as (main,),
        control_planes(short_env, log_dir, "cli-short") as (short,),
    ):
        yield Servers(main=main, short=short)


def cli_env(config_file: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``iron`` subprocess: this one's, with only our CLI settings."""
    base = {key: value for key, value in os.environ.items() if key not in CLI_VARIABLES}
    return {**base, "IRON_CONFIG": str(config_file), **extra}


def run_iron(
    config_file: Path, *args: str, input: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``iron ARGS`` as a user runs it: the installed script, in a process of its own."""
    return subprocess.run(
        [str(IRON), *args],
        env=cli_env(config_file, **env),
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def invoke(config_file: Path, *args: str, **env: str) -> Result:
    """``iron ARGS`` in this process (click's runner): fast, for the many parity calls."""
    unset: dict[str, str | None] = dict.fromkeys(CLI_VARIABLES)
    return CliRunner().invoke(
        cli, list(args), env={**unset, "IRON_CONFIG": str(config_file), **env}, prog_name="iron"
    )


def stored_profile(config_file: Path, profile: str = "default") -> dict[str, Any]:
    profiles: dict[str, Any] = tomllib.loads(config_file.read_text())["profiles"]
    return dict(profiles[profile])


def bearer(config_file: Path, profile: str = "default") -> dict[str, str]:
    return {"Authorization": f"Bearer {stored_profile(config_file, profile)['user_token']}"}


@pytest.fixture(scope="session")
def admin_config(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config file logged in as the admin on ``main`` (by the CLI itself)."""
    config_file = tmp_path_factory.mktemp("admin-home") / "config.toml"
    result = invoke(
        config_file, "login", "--url", servers.main, "--email", ADMIN_EMAIL, IRON_PASSWORD=ADMIN_PASSWORD
    )
    assert result.exit_code == 0, result.output
    return config_file


@pytest.fixture(scope="session")
def api(servers: Servers, admin_config: Path) -> Iterator[httpx.Client]:
    """Direct HTTP to ``main`` as the admin, with the very token the CLI holds: the reference."""
    with httpx.Client(base_url=servers.main, headers=bearer(admin_config), timeout=30) as http:
        yield http
