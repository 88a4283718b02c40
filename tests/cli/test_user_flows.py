"""The CLI as people and scripts use it: the installed ``iron`` in a process of its own, against live
control planes: sign in, add a provider and an agent, ask for budget, approve it, see the spend;
tables that fit the terminal (a real pty among them); exit codes and error blocks; the config
file's mode; profiles; the token refreshed when it expires; logout revoking on the server.
"""

import fcntl
import json
import os
import pty
import re
import secrets
import struct
import subprocess
import termios
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from iron.cli import config
from iron.embedded import free_port
from tests.cli.conftest import (
    IRON,
    SHORT_TTL_S,
    Servers,
    bearer,
    cli_env,
    invoke,
    run_iron,
    stored_profile,
)
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, FAKE_PROVIDER_KEY

JUSTIFICATION = "The nightly evaluation runs need a larger budget."
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _json(process: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert process.returncode == 0, process.stderr
    body: dict[str, object] = json.loads(process.stdout)
    return body


def _spend(server: str, ic_token: str, cost_usd: float) -> None:
    """What an agent's runtime does (through its sidecar): a lease, then one call's usage."""
    headers = {"Authorization": f"Bearer {ic_token}"}
    lease = httpx.post(f"{server}/api/v1/budget/handshake", headers=headers, json={"requested_budget": 5})
    assert lease.status_code == 200, lease.text
    usage = {
        "lease_id": lease.json()["lease_id"],
        "request_id": f"req_{uuid.uuid4()}",
        "input_tokens": 100,
        "output_tokens": 50,
        "cost_usd": cost_usd,
        "model": "gpt-4o-mini",
        "provider": "openai",
        "timestamp": datetime.now(UTC).isoformat(),
    }
    assert httpx.post(f"{server}/api/v1/budget/report", headers=headers, json=usage).status_code == 204


def test_login_provider_agent_request_approve_and_spend(servers: Servers, tmp_path: Path) -> None:
    config_file = tmp_path / "home" / ".iron" / "config.toml"
    signed_in = run_iron(
        config_file, "login", "--url", servers.main, "--email", ADMIN_EMAIL, IRON_PASSWORD=ADMIN_PASSWORD
    )
    assert signed_in.returncode == 0, signed_in.stderr
    assert f"Logged in to {servers.main} as {ADMIN_EMAIL} (admin)" in signed_in.stdout
    assert config_file.stat().st_mode & 0o777 == 0o600
    assert config_file.parent.stat().st_mode & 0o777 == 0o700
    assert ADMIN_PASSWORD not in config_file.read_text()

    tag = secrets.token_hex(3)
    provider = _json(
        run_iron(
            config_file, "providers", "create", "--name", f"flow-{tag}", "--type", "openai",
            "--endpoint", "https://api.openai.example/v1", "--api-key", FAKE_PROVIDER_KEY, "--json",
        )
    )  # fmt: skip
    dev_email, dev_password = f"dev-{tag}@example.com", "a long enough password"
    run_iron(
        config_file, "users", "create", "--email", dev_email, "--name", "Dev", "--role", "user",
        "--password", dev_password, "--json",
    )  # fmt: skip
    # the developer signs in on a profile of their own, typing the password at the prompt
    dev_login = run_iron(
        config_file,
        "--profile",
        "dev",
        "login",
        "--url",
        servers.main,
        "--email",
        dev_email,
        input=f"{dev_password}\n",
    )
    assert dev_login.returncode == 0, dev_login.stderr
    assert dev_password not in dev_login.stdout

    agent = _json(
        run_iron(
            config_file, "agents", "create", "--name", f"Nightly eval {tag}", "--budget", "5",
            "--providers", str(provider["id"]), "--json", IRON_PROFILE="dev",
        )
    )  # fmt: skip
    request = _json(
        run_iron(
            config_file, "--profile", "dev", "budget-requests", "create", "--agent-id", str(agent["id"]),
            "--requested-budget", "25", "--justification", JUSTIFICATION, "--json",
        )
    )  # fmt: skip
    assert request["status"] == "pending"

    pending = run_iron(config_file, "budget-requests", "list", "--status", "pending", COLUMNS="160")
    assert pending.returncode == 0, pending.stderr
    row = next(line for line in pending.stdout.splitlines() if str(request["id"]) in line)
    assert "$5.00" in row
    assert "$25.00" in row
    assert "pending" in row

    approved = run_iron(config_file, "budget-requests", "approve", str(request["id"]), COLUMNS="160")
    assert approved.returncode == 0, approved.stderr
    assert re.search(r"status\s+approved", approved.stdout)

    _spend(servers.main, str(agent["ic_token"]["token"]), 1.25)  # type: ignore[index]
    spend = run_iron(config_file, "--profile", "dev", "agents", "list", COLUMNS="160")
    assert spend.returncode == 0, spend.stderr
    header, row = (
        spend.stdout.splitlines()[1],
        next(line for line in spend.stdout.splitlines() if agent["id"] in line),
    )
    assert header.split() == ["ID", "NAME", "BUDGET", "SPENT", "REMAINING", "STATUS"]
    # remaining = budget - spent - what the open lease still holds ($5.00 - $1.25)
    assert row.split()[-4:] == ["$25.00", "$1.25", "$20.00", "active"]
    assert "Page 1 of 1 (1 in all)" in spend.stdout  # the developer sees their own agent only


def _pty_output(args: list[str], env: dict[str, str], columns: int) -> str:
    """What ``iron ARGS`` shows on a terminal ``columns`` wide (a real pseudo-terminal)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen([str(IRON), *args], stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(30) == 0
    return b"".join(chunks).decode()


def test_tables_fit_the_terminal(admin_config: Path) -> None:
    shown = _pty_output(["agents", "list"], cli_env(admin_config), columns=90)
    assert ANSI.search(shown)  # a terminal gets styles
    lines = ANSI.sub("", shown).splitlines()
    assert max(len(line) for line in lines) <= 90
    assert any(line.split()[:3] == ["ID", "NAME", "BUDGET"] for line in lines)
    assert re.search(r"agent_[0-9a-f-]{36}\s.*\$\d[\d,]*\.\d\d", "\n".join(lines))  # ids whole, money

    narrow = run_iron(admin_config, "agents", "list", COLUMNS="70")
    assert narrow.returncode == 0
    assert not ANSI.search(narrow.stdout)
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 70


def test_exit_codes_and_errors(
    servers: Servers, admin_config: Path, api: httpx.Client, tmp_path: Path
) -> None:
    missing = run_iron(admin_config, "agents", "get", f"agent_{uuid.uuid4()}")
    assert missing.returncode == 1
    assert "Code: RESOURCE_NOT_FOUND" in missing.stderr
    assert "Status: 404" in missing.stderr
    assert "Run 'iron agents list'" in missing.stderr
    assert missing.stdout == ""

    total = api.get("/api/v1/agents", params={"per_page": 1}).json()["pagination"]["total"]
    bad = ["agents", "create", "--name", "", "--budget", "-5", "--providers", "ip_nope"]
    refused = run_iron(admin_config, *bad)
    assert refused.returncode == 1
    assert "Code: VALIDATION_ERROR" in refused.stderr
    assert "Status: 400" in refused.stderr
    fields = dict(re.findall(r"^  ([\w.\[\]]+): (.+)$", refused.stderr, re.MULTILINE))
    assert {"name", "budget"} <= fields.keys()
    assert any(key.startswith("providers") for key in fields)
    as_json = run_iron(admin_config, *bad, "--json")  # scripts get the API's error body on stdout
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["error"]["fields"].keys() == fields.keys()
    assert api.get("/api/v1/agents", params={"per_page": 1}).json()["pagination"]["total"] == total

    usage = run_iron(admin_config, "agents", "list", "--per-page", "many")
    assert usage.returncode == 2
    assert "Invalid value for '--per-page'" in usage.stderr
    nobody = run_iron(tmp_path / "nobody.toml", "agents", "list", IRON_URL=servers.main)
    assert nobody.returncode == 2
    assert "Not logged in" in nobody.stderr
    assert "iron login" in nobody.stderr
    nowhere = run_iron(admin_config, "--url", f"http://127.0.0.1:{free_port()}", "agents", "list")
    assert nowhere.returncode == 3
    assert "Cannot connect to the control plane" in nowhere.stderr


def test_profiles_switch_between_servers(servers: Servers, tmp_path: Path) -> None:
    config_file = tmp_path / "config.toml"
    for profile, url in (("default", servers.main), ("short", servers.short)):
        login = ["--profile", profile, "login", "--url", url, "--email", ADMIN_EMAIL]
        assert invoke(config_file, *login, IRON_PASSWORD=ADMIN_PASSWORD).exit_code == 0

    def server_of(*args: str, **env: str) -> str:
        shown = run_iron(config_file, *args, "whoami", COLUMNS="200", **env)
        assert shown.returncode == 0, shown.stderr
        return re.findall(r"^\s*url\s+(\S+)", shown.stdout, re.MULTILINE)[0]

    assert server_of() == servers.main
    assert server_of("--profile", "short") == servers.short
    assert server_of(IRON_PROFILE="short") == servers.short
    assert invoke(config_file, "config", "use", "short").exit_code == 0
    assert server_of() == servers.short

    shown = invoke(config_file, "config", "show", "--json")
    assert json.loads(shown.stdout)["default_profile"] == "short"
    assert set(json.loads(shown.stdout)["profiles"]) == {"default", "short"}
    assert stored_profile(config_file)["user_token"] not in shown.stdout  # never a token


def test_expired_token_is_refreshed_and_the_new_one_saved(servers: Servers, tmp_path: Path) -> None:
    config_file = tmp_path / "config.toml"
    login = ["login", "--url", servers.short, "--email", ADMIN_EMAIL]
    assert invoke(config_file, *login, IRON_PASSWORD=ADMIN_PASSWORD).exit_code == 0
    first = stored_profile(config_file)
    time.sleep(SHORT_TTL_S + 1)
    expired = httpx.get(f"{servers.short}/api/v1/agents", headers=bearer(config_file))
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "AUTH_TOKEN_EXPIRED"

    listed = run_iron(config_file, "agents", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    second = stored_profile(config_file)
    assert second["user_token"] != first["user_token"]
    assert second["refresh_token"] != first["refresh_token"]  # rotated, and the new one kept
    assert config_file.stat().st_mode & 0o777 == 0o600

    # the server, not the clock, says it expired: refresh, then the same request again
    time.sleep(SHORT_TTL_S + 1)
    believed = config.load(config_file)
    believed.profiles["default"].expires_at = "2999-01-01T00:00:00.000Z"
    config.save(config_file, believed)
    assert run_iron(config_file, "agents", "list", "--json").returncode == 0
    assert stored_profile(config_file)["refresh_token"] != second["refresh_token"]

    # several commands at once share one refresh: a refresh token reused would end the session
    time.sleep(SHORT_TTL_S + 1)
    together = [
        subprocess.Popen(
            [str(IRON), "agents", "list", "--json"], env=cli_env(config_file), stdout=subprocess.DEVNULL
        )
        for _ in range(3)
    ]
    assert [process.wait(60) for process in together] == [0, 0, 0]
    assert run_iron(config_file, "whoami", "--json").returncode == 0


def test_logout_revokes_on_the_server_and_clears_the_profile(servers: Servers, tmp_path: Path) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text('[profiles.default]\nurl = "http://old.example"\n')
    config_file.chmod(0o644)
    login = ["login", "--url", servers.main, "--email", ADMIN_EMAIL]
    assert invoke(config_file, *login, IRON_PASSWORD=ADMIN_PASSWORD).exit_code == 0
    assert config_file.stat().st_mode & 0o777 == 0o600  # a new file, never the old one's mode
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.toml", "config.toml.lock"]
    token = bearer(config_file)

    signed_out = run_iron(config_file, "logout")
    assert signed_out.returncode == 0, signed_out.stderr
    assert httpx.get(f"{servers.main}/api/v1/agents", headers=token).status_code == 401
    assert stored_profile(config_file) == {"url": servers.main, "email": ADMIN_EMAIL}
    assert run_iron(config_file, "agents", "list").returncode == 2


def test_api_token_instead_of_a_login(servers: Servers, api: httpx.Client, tmp_path: Path) -> None:
    token = api.post("/api/v1/api-tokens", json={"name": f"script-{secrets.token_hex(3)}"}).json()
    nobody = tmp_path / "config.toml"
    listed = invoke(nobody, "agents", "list", "--json", IRON_URL=servers.main, IRON_API_TOKEN=token["token"])
    assert listed.exit_code == 0
    assert json.loads(listed.stdout) == api.get("/api/v1/agents").json()
    assert invoke(nobody, "logout", IRON_URL=servers.main, IRON_API_TOKEN=token["token"]).exit_code == 2
    assert not nobody.exists()


def test_audit_export_to_a_file_with_progress(admin_config: Path, api: httpx.Client, tmp_path: Path) -> None:
    saved = tmp_path / "audit.csv"
    exported = run_iron(
        admin_config, "audit-logs", "export", "--operation", "agent_created", "-o", str(saved)
    )
    assert exported.returncode == 0, exported.stderr
    assert "Exporting" in exported.stderr
    assert f"to {saved}" in exported.stderr
    expected = api.get("/api/v1/audit-logs/export", params={"operation": "agent_created"})
    assert saved.read_bytes() == expected.content
    assert expected.text.count("AGENT_CREATED") >= 2


def test_shell_completion(admin_config: Path) -> None:
    script = invoke(admin_config, "completion", "bash")
    assert script.exit_code == 0
    assert "_IRON_COMPLETE=bash_complete" in script.stdout
    completed = invoke(
        admin_config, _IRON_COMPLETE="bash_complete", COMP_WORDS="iron budget-requests ap", COMP_CWORD="2"
    )
    assert "plain,approve" in completed.stdout.splitlines()


@pytest.mark.parametrize("value", ["not a url", "ftp://example.com"])
def test_a_bad_url_is_a_usage_error(admin_config: Path, value: str) -> None:
    result = invoke(admin_config, "--url", value, "agents", "list")
    assert result.exit_code == 2
    assert "Invalid control-plane URL" in result.output


def test_a_broken_config_file_is_a_usage_error(tmp_path: Path) -> None:
    broken = tmp_path / "config.toml"
    broken.write_text("[profiles.default]\nurl = 42\n")
    result = invoke(broken, "agents", "list")
    assert result.exit_code == 2
    assert "is not a valid iron config" in result.output
