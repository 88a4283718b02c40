"""``python3 tasks.py demo``: the whole system on one machine, driven until every budget runs out.

On embedded PostgreSQL and Valkey (unless ``DATABASE_URL`` / ``REDIS_URL`` name servers to use)
it starts the control plane, a fake LLM provider and one sidecar per agent; as admin it creates
the provider and the agents over the REST API; simulated runtimes then call the provider through
their sidecar (with the key the sidecar hands them) until every agent is refused. Finally the
sidecars shut down, flushing their journals and returning their leases, and the ledger in
PostgreSQL is checked against what the runtimes and the sidecars counted, to the microdollar.
The exit code is 0 only if every proof holds.
"""

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import signal
import sys
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import httpx
import msgspec
from rich.console import Console, JustifyMethod
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from control_plane.agents.schemas import Agent, AgentCreate, AgentCreated
from control_plane.auth.schemas import LoginRequest, LoginResponse
from control_plane.lib.pagination import Page
from control_plane.providers.schemas import Credentials, Provider, ProviderCreate
from iron.embedded import default_data_root, free_port, services
from iron.fake_llm import API_KEY_ENV, PRICES, ChatCompletion, ChatRequest, Message, cost_micros, count_tokens
from iron.money import charge_micros, grant_micros, usd
from iron.processes import Children, StartFailed, start_control_planes, wait_ready
from sidecar.client import AsyncSidecarClient, BudgetExhausted
from sidecar.schemas import BudgetView

DEMO_ADMIN_EMAIL = "admin@example.com"
DEMO_ADMIN_PASSWORD = "admin-password"  # noqa: S105  (a local demo; production refuses defaults)
NAMES = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
LEASE_USD = "0.5"  # small, so that sidecars refresh their leases many times
DRIVE_TIMEOUT_S = 120.0
WORDS = ("the", "agent", "reads", "a", "ticket", "drafts", "reply", "checks", "policy", "calls", "tool")

T = TypeVar("T")


class DemoError(Exception):
    """Something the demo needs did not work; the message says what and where to look."""


@dataclass
class AgentRun:
    """One agent: what the admin set up, and what its runtimes and sidecar counted."""

    name: str
    budget_micros: int
    id: str = ""
    ic_token: str = ""
    sidecar_url: str = ""
    calls: int = 0
    refusals: int = 0
    committed_micros: int = 0  # the sum of the costs its runtimes committed
    runtimes_left: int = 0
    control_plane_spent_usd: float = 0.0  # as the admin API shows it, to the cent
    sidecar: BudgetView | None = None


@dataclass(frozen=True)
class Ledger:
    """One agent's row in PostgreSQL, exact, after the sidecars returned their leases."""

    spent: int
    outstanding: int
    overdrawn: int
    events: int
    open_leases: int


# -- the admin's side: REST API of the control plane -----------------------------------------------


def _expect(response: httpx.Response, status: int, type_: type[T]) -> T:
    if response.status_code != status:
        raise DemoError(
            f"{response.request.method} {response.url.path}: {response.status_code} {response.text}"
        )
    return msgspec.json.decode(response.content, type=type_)


def admin_credentials() -> tuple[str, str]:
    """The bootstrap admin the control plane creates: the environment's, else the demo's."""
    return (
        os.environ.get("IRON_BOOTSTRAP_ADMIN_EMAIL", DEMO_ADMIN_EMAIL),
        os.environ.get("IRON_BOOTSTRAP_ADMIN_PASSWORD", DEMO_ADMIN_PASSWORD),
    )


async def set_up(
    http: httpx.AsyncClient, provider_url: str, provider_key: str, tag: str, agents: list[AgentRun]
) -> None:
    """Log in (the client keeps the admin's token), create the provider and the agents."""
    email, password = admin_credentials()
    login = LoginRequest(email=email, password=password)
    token = _expect(
        await http.post("/api/v1/auth/login", content=msgspec.json.encode(login)), 200, LoginResponse
    )
    http.headers["Authorization"] = f"Bearer {token.user_token}"
    provider = ProviderCreate(
        name=f"fake-llm-{tag}",
        type="openai",
        endpoint=provider_url,
        credentials=Credentials(api_key=provider_key),
        models=list(PRICES),
    )
    created = _expect(
        await http.post("/api/v1/providers", content=msgspec.json.encode(provider)), 201, Provider
    )
    for agent in agents:
        body = AgentCreate(
            name=f"demo-{tag}-{agent.name}", budget=usd(agent.budget_micros), providers=[created.id]
        )
        reply = await http.post("/api/v1/agents", content=msgspec.json.encode(body))
        made = _expect(reply, 201, AgentCreated)
        agent.id, agent.ic_token = made.id, made.ic_token.token


# -- the simulated runtimes ------------------------------------------------------------------------


async def runtime(
    agent: AgentRun, sidecar: AsyncSidecarClient, llm: httpx.AsyncClient, rng: random.Random, console: Console
) -> None:
    """Calls the provider until refused for good; its only configuration is the sidecar's URL."""
    provider = await sidecar.provider()
    url, headers = f"{provider.base_url}/chat/completions", {"Authorization": f"Bearer {provider.api_key}"}
    while True:
        words = rng.choices(WORDS, k=rng.randint(150, 1200))
        request = ChatRequest(
            model=rng.choice(list(PRICES)),
            messages=[Message("user", " ".join(words))],
            max_tokens=rng.randint(100, 600),
        )
        estimate = cost_micros(request.model, count_tokens(request.messages), request.max_tokens)
        try:
            async with sidecar.spend(usd(estimate, 6)) as call:
                response = await llm.post(url, content=msgspec.json.encode(request), headers=headers)
                response.raise_for_status()
                usage = msgspec.json.decode(response.content, type=ChatCompletion).usage
                call.cost_usd, call.model, call.provider = usage.cost_usd, request.model, provider.provider
                call.input_tokens, call.output_tokens = usage.prompt_tokens, usage.completion_tokens
        except BudgetExhausted:
            agent.refusals += 1
            if (await sidecar.budget()).budget_exhausted:  # the control plane has no more to grant
                break
            await asyncio.sleep(0.05)  # the sidecar is topping its lease up
            continue
        agent.calls += 1
        agent.committed_micros += charge_micros(usage.cost_usd)
    agent.runtimes_left -= 1
    if agent.runtimes_left == 0:
        console.print(f"{agent.name}: refused after {agent.calls} calls; its budget is used up")


async def poll(
    http: httpx.AsyncClient, tag: str, agents: list[AgentRun], sidecars: list[AsyncSidecarClient]
) -> None:
    """What the admin API and each sidecar say right now."""
    reply = await http.get("/api/v1/agents", params={"search": f"demo-{tag}-", "per_page": 100})
    spent = {row.id: row.spent for row in _expect(reply, 200, Page[Agent]).data}
    views = await asyncio.gather(*(sidecar.budget() for sidecar in sidecars))
    for agent, view in zip(agents, views, strict=True):
        agent.control_plane_spent_usd = spent.get(agent.id, agent.control_plane_spent_usd)
        agent.sidecar = view


def _table(title: str, columns: list[str], centered: int = 0) -> Table:
    """Agent first (left), then numbers (right), then ``centered`` check marks."""
    table = Table(title=title)
    for index, column in enumerate(columns):
        justify: JustifyMethod = (
            "left" if index == 0 else "center" if index >= len(columns) - centered else "right"
        )
        table.add_column(column, justify=justify)
    return table


def live_table(agents: list[AgentRun]) -> Table:
    columns = ["agent", "budget", "spent (ledger)", "sidecar: spent / leased", "runtimes committed"]
    table = _table("Iron Cage: spend per agent, live", [*columns, "calls", "refused", "used", ""])
    for agent in agents:
        budget, spent = usd(agent.budget_micros), agent.control_plane_spent_usd
        lease = f"${agent.sidecar.spent_usd:.4f} / ${agent.sidecar.granted_usd:.4f}" if agent.sidecar else "-"
        table.add_row(
            agent.name,
            f"${budget:.2f}",
            f"${spent:.2f}",
            lease,
            f"${usd(agent.committed_micros, 6):.4f}",
            str(agent.calls),
            str(agent.refusals),
            ProgressBar(total=budget, completed=spent, width=24),
            f"{100 * spent / budget:3.0f}% " + ("refused" if agent.runtimes_left == 0 else "running"),
        )
    return table


async def drive(
    http: httpx.AsyncClient, tag: str, agents: list[AgentRun], args: argparse.Namespace, console: Console
) -> None:
    """Run every runtime to its refusal, showing spend live; leaves each agent's last sidecar view."""
    sidecars = [AsyncSidecarClient(agent.sidecar_url) for agent in agents]
    llm = httpx.AsyncClient(timeout=30)
    display = Live(live_table(agents), console=console, refresh_per_second=4) if args.live else None
    try:
        with display or contextlib.nullcontext():
            runtimes = asyncio.gather(
                *(
                    runtime(agent, sidecar, llm, random.Random(f"{args.seed}/{agent.name}/{n}"), console)
                    for agent, sidecar in zip(agents, sidecars, strict=True)
                    for n in range(args.runtimes_per_agent)
                )
            )
            try:
                async with asyncio.timeout(DRIVE_TIMEOUT_S):
                    while not runtimes.done():
                        await poll(http, tag, agents, sidecars)
                        if display is not None:
                            display.update(live_table(agents))
                        await asyncio.wait([runtimes], timeout=0.25)
                await runtimes
            except TimeoutError:
                raise DemoError(
                    f"the runtimes did not use up their budgets in {DRIVE_TIMEOUT_S:.0f} s"
                ) from None
            finally:  # on a timeout or Ctrl-C: their holds are released before the clients close
                runtimes.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runtimes
            await poll(http, tag, agents, sidecars)
            if display is not None:
                display.update(live_table(agents))
    finally:
        await llm.aclose()
        for sidecar in sidecars:
            await sidecar.aclose()


# -- the proof -------------------------------------------------------------------------------------


async def read_ledger(database_url: str, agents: list[AgentRun]) -> dict[str, Ledger]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT a.id, a.spent_micros, a.outstanding_micros, a.overdrawn_micros,"
            " (SELECT coalesce(sum(e.cost_micros), 0) FROM usage_events e WHERE e.agent_id = a.id),"
            " (SELECT count(*) FROM leases l WHERE l.agent_id = a.id AND l.status = 'open')"
            " FROM agents a WHERE a.id = ANY($1::text[])",
            [agent.id for agent in agents],
        )
    finally:
        await connection.close()
    return {row[0]: Ledger(*row[1:]) for row in rows}


PROOFS = ("spent <= budget", "= runtimes", "= sidecar", "leases returned")


def proofs(agent: AgentRun, ledger: Ledger) -> list[bool]:
    """One verdict per entry of PROOFS; the ledger must agree exactly with both counts."""
    sidecar_spent = charge_micros(agent.sidecar.spent_usd) if agent.sidecar else -1
    return [
        ledger.spent <= agent.budget_micros and ledger.overdrawn == 0,
        ledger.spent == ledger.events == agent.committed_micros,
        ledger.spent == sidecar_spent,
        ledger.outstanding == 0 and ledger.open_leases == 0,
    ]


def summary(agents: list[AgentRun], ledgers: dict[str, Ledger], console: Console) -> bool:
    columns = ["agent", "budget", "ledger spent", "runtimes committed", "sidecar counted", "outstanding"]
    table = _table(
        "Summary: the ledger in PostgreSQL against the runtimes and the sidecars",
        [*columns, "calls", "refused", *PROOFS],
        centered=len(PROOFS),
    )
    holds = True
    for agent in agents:
        ledger = ledgers[agent.id]
        checks = proofs(agent, ledger)
        holds = holds and all(checks)
        table.add_row(
            agent.name,
            f"${usd(agent.budget_micros):.2f}",
            f"${usd(ledger.spent, 6):.6f}",
            f"${usd(agent.committed_micros, 6):.6f}",
            f"${agent.sidecar.spent_usd:.6f}" if agent.sidecar else "-",
            f"${usd(ledger.outstanding, 6):.6f}",
            str(agent.calls),
            str(agent.refusals),
            *("[green]✓[/]" if check else "[red]✗[/]" for check in checks),
        )
    console.print(table)
    if holds:
        console.print(
            "All proofs hold: no agent overspent, the ledger equals what the runtimes committed and "
            "the sidecars counted, to the microdollar, and every lease was returned."
        )
    else:
        console.print("[red]PROOF FAILED[/]: see the ✗ above.")
    return holds


# -- putting it together ---------------------------------------------------------------------------


async def run(
    args: argparse.Namespace, database_url: str, redis_url: str, children: Children, console: Console
) -> bool:
    tag = secrets.token_hex(3)
    provider_key = f"sk-fake-{secrets.token_hex(16)}"  # only the fake provider and the control plane see it
    llm_port = free_port()
    provider_url = f"http://127.0.0.1:{llm_port}/v1"
    email, password = admin_credentials()
    (control_plane,) = await start_control_planes(children, database_url, redis_url, (email, password))
    children.start("fake-llm", ["iron.fake_llm", "--port", str(llm_port)], {API_KEY_ENV: provider_key})
    agents = [
        AgentRun(NAMES[i], budget, runtimes_left=args.runtimes_per_agent)
        for i, budget in enumerate(args.budgets)
    ]
    async with httpx.AsyncClient(base_url=control_plane, timeout=10) as http:
        await wait_ready(http, children, "fake-llm", provider_url)
        console.print(
            f"control plane on {control_plane} (admin {email}); fake LLM provider on {provider_url}"
        )
        await set_up(http, provider_url, provider_key, tag, agents)
        for agent in agents:
            port = free_port()
            agent.sidecar_url = f"http://127.0.0.1:{port}"
            env = {
                "IRON_CONTROL_PLANE_URL": control_plane,
                "IRON_IC_TOKEN": agent.ic_token,
                "REDIS_URL": redis_url,
                "IRON_LEASE_USD": LEASE_USD,
            }
            children.start(f"sidecar-{agent.name}", ["sidecar", "--port", str(port)], env)
        await asyncio.gather(
            *(wait_ready(http, children, f"sidecar-{a.name}", f"{a.sidecar_url}/healthz") for a in agents)
        )
        console.print(
            f"{len(agents)} agents, a sidecar each (leases of ${LEASE_USD}), "
            f"{args.runtimes_per_agent} runtimes per agent; the runtimes know only their sidecar's URL"
        )
        await drive(http, tag, agents, args, console)
    codes = await asyncio.to_thread(children.stop, [f"sidecar-{agent.name}" for agent in agents])
    unclean = {name: code for name, code in codes.items() if code != 0}
    if unclean:
        console.print(f"[red]sidecars did not stop cleanly[/]: {unclean}")
    else:
        console.print("sidecars stopped: journals flushed, leases returned")
    return summary(agents, await read_ledger(database_url, agents), console) and not unclean


def _budgets(text: str) -> list[int]:
    try:
        budgets = [grant_micros(part.strip()) for part in text.split(",")]
    except (ArithmeticError, ValueError):
        raise argparse.ArgumentTypeError("expected USD amounts, e.g. 2,3,5") from None
    if not 1 <= len(budgets) <= len(NAMES) or min(budgets) <= 0 or any(b % 10_000 for b in budgets):
        raise argparse.ArgumentTypeError(f"1 to {len(NAMES)} budgets in whole cents, e.g. 2,3.50,5")
    return budgets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iron.demo", description=__doc__)
    parser.add_argument("--budgets", type=_budgets, default=_budgets("2,3,5"), help="USD per agent (2,3,5)")
    parser.add_argument("--runtimes-per-agent", type=int, default=4, choices=range(1, 33), metavar="N")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-live", dest="live", action="store_false", help="plain output (CI, logs)")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)
    data_root = default_data_root()
    log_dir = data_root / "demo-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        console.print(f"starting embedded PostgreSQL and Valkey (data in {data_root}) ...")
    console.print(f"child process logs in {log_dir}")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop in order, as on Ctrl-C
    try:
        with services(data_root) as urls, Children(log_dir) as children:
            ok = asyncio.run(run(args, urls.database_url, urls.redis_url, children, console))
    except (DemoError, StartFailed) as exc:
        console.print(f"[red]demo failed[/]: {exc}")
        return 1
    except KeyboardInterrupt:
        console.print("interrupted; every child process was stopped")
        return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
