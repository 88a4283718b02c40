"""docker-compose.yml and the Dockerfile, checked against the code (there is no Docker engine here).

The static tests parse both files and check every service's program, flags, ports,
variables, build paths and dependencies against this repository. The last test runs
the services' own commands, environments and health checks as local processes (names
and ports mapped to loopback), so the seed, the sidecars reading its token files, the
runtimes and locust's web UI are shown to work together, and the ledger to be exact.
"""

import asyncio
import fnmatch
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import yaml

from iron.embedded import ServiceUrls, free_port, scratch_database
from iron.money import charge_micros
from sidecar.client import DEFAULT_URL
from sidecar.store import LUA_DIR

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
BUILT = {name: service for name, service in SERVICES.items() if "build" in service}
IMAGE_PORTS = {"postgres": 5432, "redis": 6379}  # the images' defaults
SOURCES = "\n".join(
    path.read_text()
    for package in ("iron", "control_plane", "sidecar", "bench")
    for path in (ROOT / package).rglob("*.py")
)
URL = re.compile(r"\b[a-z]+://(?:[^@/\s]+@)?([A-Za-z0-9.-]+):(\d+)")


def _dockerfile() -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage: {stage name: [(instruction, arguments), ...]}."""
    stages: dict[str, list[tuple[str, str]]] = {}
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction == "FROM":
            current = stages.setdefault(arguments.split()[-1], [])
        current.append((instruction, arguments.strip()))
    return stages


STAGES = _dockerfile()


def _stage_commands() -> dict[str, list[str]]:
    return {
        stage: json.loads(args) for stage, steps in STAGES.items() for instr, args in steps if instr == "CMD"
    }


def _commands() -> dict[str, list[str]]:
    """Every program this repository's image runs: the services' commands and the stages' CMDs."""
    return {
        **{n: s["command"] for n, s in BUILT.items()},
        **{f"Dockerfile:{k}": v for k, v in _stage_commands().items()},
    }


def _console_scripts() -> dict[str, str]:
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}


def _split(command: list[str]) -> tuple[list[str], list[str]]:
    """(the program, as run here, its own arguments): `python -m x` or a console script."""
    if command[0] == "python":
        assert command[1] == "-m", command
        return [sys.executable, "-m", command[2]], command[3:]
    return [str(Path(sys.executable).parent / command[0])], command[1:]


def _listen_port(command: list[str]) -> int | None:
    for flag in ("--port", "--web-port"):
        if flag in command:
            return int(command[command.index(flag) + 1])
    return None


def _health_url(service: dict[str, Any]) -> str | None:
    found = URL.search(" ".join(service.get("healthcheck", {}).get("test", [])))
    return found.group(0) if found else None


def _strings(service: dict[str, Any]) -> list[str]:
    return [
        *service.get("command", []),
        *map(str, service.get("environment", {}).values()),
        *service.get("healthcheck", {}).get("test", []),
    ]


def _netns_target(service: dict[str, Any]) -> str | None:
    mode = service.get("network_mode", "")
    return mode.removeprefix("service:") if mode.startswith("service:") else None


# -- the static checks -------------------------------------------------------------------------------


def test_every_build_path_exists_and_every_image_is_pinned() -> None:
    assert set(BUILT) >= {"control-plane", "seed", "sidecar-alpha", "sidecar-beta", "runtime-alpha", "locust"}
    for name, service in SERVICES.items():
        if "build" not in service:
            assert re.fullmatch(r"[a-z0-9./-]+:[A-Za-z0-9._-]+", service["image"]), name
            continue
        context = ROOT / service["build"]["context"]
        assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file(), name
        assert service["build"]["target"] in STAGES, name


def test_the_dockerfile_copies_what_exists_and_installs_the_layout_the_code_expects() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and line[0] != "#"
    ]
    copies = [args.split() for steps in STAGES.values() for instr, args in steps if instr == "COPY"]
    assert copies
    for *sources, _destination in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    # the sidecar reads its scripts from lua/ beside its package: copied there, installed in place
    assert LUA_DIR == ROOT / "lua"
    assert ["lua", "lua"] in copies
    runs = " ".join(args for steps in STAGES.values() for instr, args in steps if instr == "RUN")
    assert "pip install --no-cache-dir -e ." in runs
    for stage, command in _stage_commands().items():  # each stage exposes the port its CMD serves
        assert f"EXPOSE {_listen_port(command)}" in [f"{i} {a}" for i, a in STAGES[stage]], stage


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_is_a_program_of_this_project_and_takes_those_flags(name: str) -> None:
    command = _commands()[name]
    if command[0] == "python":
        assert importlib.util.find_spec(command[2]) is not None, command
    else:
        assert command[0] in _console_scripts(), command
    program, arguments = _split(command)
    # locust's --help leaves out the options its locustfiles add; --list parses them all, strictly
    probe = "--list" if command[0] == "locust" else "--help"
    shown = subprocess.run(
        [*program, *arguments, probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert shown.returncode == 0, shown.stdout[-2000:] + shown.stderr[-2000:]
    if probe == "--list":
        assert {"Runtime", "Admin", "DashboardViewer"} <= set(shown.stdout.split()), shown.stdout
    for flag in (arg for arg in arguments if arg.startswith("-") and probe == "--help"):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}\b", shown.stdout), f"{name}: {flag} is not in --help"
    for path in (arguments[i + 1] for i, arg in enumerate(arguments) if arg == "-f"):
        assert (ROOT / path).exists(), path  # relative to WORKDIR, where the repository is copied


def test_ports_and_urls_match_what_the_services_listen_on() -> None:
    ports = {name: _listen_port(service["command"]) for name, service in BUILT.items()} | IMAGE_PORTS
    for name, service in BUILT.items():
        for mapping in service.get("ports", []):
            assert int(str(mapping).split(":")[-1]) == ports[name], name
        target = _netns_target(service)
        for text in _strings(service):
            for host, port in URL.findall(text):
                if host == "127.0.0.1":  # itself, or the service whose network it shares
                    assert int(port) == ports[target or name], (name, text)
                else:
                    assert host in SERVICES, (name, text)
                    assert int(port) == ports[host], (name, text)
        if target and "--sidecar" not in service["command"]:
            assert urlsplit(DEFAULT_URL).port == ports[target], name
    assert ports["control-plane"] == 8080  # the default of --port / IRON_PORT
    assert urlsplit(DEFAULT_URL).port == ports["sidecar-alpha"] == ports["sidecar-beta"] == 8081


def test_every_variable_is_one_the_code_reads() -> None:
    for name, service in BUILT.items():
        for variable in service.get("environment", {}):
            assert f'"{variable}"' in SOURCES, f"{name}: nothing reads {variable}"


def test_every_dependency_exists_and_can_be_waited_for() -> None:
    volumes = set(COMPOSE.get("volumes", {}))
    for name, service in SERVICES.items():
        for dependency, how in service.get("depends_on", {}).items():
            assert dependency in SERVICES, name
            if how["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], (name, dependency)
            else:
                assert how["condition"] == "service_completed_successfully", name
                assert SERVICES[dependency]["restart"] == "no", dependency
        target = _netns_target(service)
        assert target is None or target in SERVICES
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in volumes, (name, volume)
    served = {name for name, s in BUILT.items() if _listen_port(s["command"])}
    assert served == {name for name, s in BUILT.items() if "healthcheck" in s}


def test_the_sidecar_reads_its_ic_token_from_a_file(tmp_path: Path) -> None:
    from sidecar.config import ConfigError, SidecarSettings

    token = tmp_path / "alpha.token"
    token.write_text("ic_secret-value\n")
    env = {"IRON_CONTROL_PLANE_URL": "http://cp", "REDIS_URL": "redis://r", "IRON_IC_TOKEN_FILE": str(token)}
    assert SidecarSettings.from_env(env).ic_token == "ic_secret-value"
    assert SidecarSettings.from_env({**env, "IRON_IC_TOKEN": "ic_direct"}).ic_token == "ic_direct"
    with pytest.raises(ConfigError, match="IRON_IC_TOKEN_FILE cannot be read") as refused:
        SidecarSettings.from_env({**env, "IRON_IC_TOKEN_FILE": str(tmp_path / "missing")})
    assert "secret" not in str(refused.value)


# -- the services, run here --------------------------------------------------------------------------


class Stack:
    """The built services as local processes: compose names and ports mapped to loopback."""

    def __init__(self, tmp: Path, database_url: str, redis_url: str) -> None:
        self.tmp = tmp
        self.ports = {name: free_port() for name, s in BUILT.items() if _listen_port(s["command"])}
        compose_ports = {name: _listen_port(BUILT[name]["command"]) for name in self.ports}
        self.replacements = [
            *(
                (f"//{name}:{compose_ports[name]}", f"//127.0.0.1:{port}")
                for name, port in self.ports.items()
            ),
            ("postgresql://postgres@postgres:5432/postgres", database_url),
            ("redis://redis:6379/0", redis_url),
            ("/var/lib/iron-cage", str(tmp / "seed-tokens")),
            ("0.0.0.0", "127.0.0.1"),  # noqa: S104 - compose's every-interface, mapped to loopback
        ]
        self.compose_ports = compose_ports
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def local(self, name: str, text: str) -> str:
        for old, new in self.replacements:
            text = text.replace(old, new)
        own = _netns_target(BUILT[name]) or name
        if own in self.ports:  # loopback: itself, or the service whose network it shares
            text = text.replace(f"127.0.0.1:{self.compose_ports[own]}", f"127.0.0.1:{self.ports[own]}")
        return text

    def argv(self, name: str, **values: str) -> list[str]:
        command = list(BUILT[name]["command"])
        for flag in ("--port", "--web-port"):
            if flag in command:
                command[command.index(flag) + 1] = str(self.ports[name])
        for flag, value in values.items():  # a value the test changes (said where it does)
            command[command.index(flag) + 1] = value
        program, arguments = _split(command)
        return [*program, *(self.local(name, arg) for arg in arguments)]

    def env(self, name: str) -> dict[str, str]:
        own = {key: self.local(name, str(value)) for key, value in BUILT[name].get("environment", {}).items()}
        return {**os.environ, **own}

    def start(self, name: str, **values: str) -> None:
        with (self.tmp / f"{name}.log").open("wb") as log:
            self.procs[name] = subprocess.Popen(
                self.argv(name, **values), cwd=ROOT, env=self.env(name), stdout=log, stderr=subprocess.STDOUT
            )

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    def healthy(self, name: str, timeout_s: float = 60) -> None:
        """Until the service's own health check, run here, passes."""
        kind, program, flag, code = BUILT[name]["healthcheck"]["test"]
        assert (kind, program, flag) == ("CMD", "python", "-c")
        deadline = time.monotonic() + timeout_s
        while subprocess.run([sys.executable, "-c", self.local(name, code)], capture_output=True).returncode:
            assert self.procs[name].poll() is None, f"{name} exited:\n{self.log(name)}"
            assert time.monotonic() < deadline, f"{name} is not healthy:\n{self.log(name)}"
            time.sleep(0.2)

    def stop(self, names: list[str]) -> dict[str, int]:
        for name in names:
            self.procs[name].terminate()
        return {name: self.procs.pop(name).wait(30) for name in names}

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()


async def _ledger(database_url: str) -> dict[str, tuple[int, int, int]]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT name, budget_micros, spent_micros, outstanding_micros FROM agents"
        )
    finally:
        await connection.close()
    return {row[0].rsplit("-", 1)[-1]: (row[1], row[2], row[3]) for row in rows}


def _drive(local: Stack) -> dict[str, int]:
    """Every built service in compose's order; what each runtime says it committed, in microdollars."""
    for name in ("control-plane", "fake-llm"):
        local.start(name)
    for name in ("control-plane", "fake-llm"):
        local.healthy(name)
    # small budgets (the file's are for watching), so the runtimes use them up in seconds
    seed = local.argv("seed", **{"--budgets": "0.4,0.3"})
    for attempt in ("creates", "finds"):  # a second run finds the tokens and changes nothing
        done = subprocess.run(
            seed, env=local.env("seed"), capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert ("already seeded" in done.stdout) == (attempt == "finds"), done.stdout
    for token in (local.tmp / "seed-tokens").iterdir():
        assert token.read_text().startswith("ic_")
    sidecars = ["sidecar-alpha", "sidecar-beta"]
    for name in sidecars:
        local.start(name)
    for name in sidecars:
        local.healthy(name)
    runtimes = ["runtime-alpha", "runtime-beta"]
    for name in runtimes:
        local.start(name)
    for name in runtimes:
        assert local.procs[name].wait(90) == 0, local.log(name)
    local.start("locust")
    local.healthy("locust")
    assert local.stop(["locust"])["locust"] in (0, 1), local.log("locust")
    assert local.stop(sidecars) == dict.fromkeys(sidecars, 0)  # journals flushed, leases returned
    return {
        name.removeprefix("runtime-"): int(re.findall(r"\((\d+) microdollars\)", local.log(name))[-1])
        for name in runtimes
    }


@pytest.mark.slow
async def test_the_services_run_together_and_the_ledger_is_exact(
    tmp_path: Path, service_urls: ServiceUrls
) -> None:
    async with scratch_database(service_urls.database_url, "iron_compose") as database_url:
        local = Stack(tmp_path, database_url, service_urls.redis_url)
        try:
            committed = await asyncio.to_thread(_drive, local)
        finally:
            local.stop_all()
        ledger = await _ledger(database_url)
    assert set(ledger) == set(committed) == {"alpha", "beta"}
    for agent, (budget, spent, outstanding) in ledger.items():
        assert spent == committed[agent] > 0, (agent, ledger, committed)
        assert budget - charge_micros(0.1) < spent <= budget  # used up, never overspent
        assert outstanding == 0
