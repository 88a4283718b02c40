"""``python -m bench.runtime``: one simulated agent runtime, as docker compose runs it next to a sidecar.

It knows only its sidecar's URL (by default the SDK's, on loopback, as when it shares the
sidecar's network like a pod): the provider's URL and key come from the sidecar. Its
loops are the demo's runtimes (``iron.demo.runtime``): they call the provider between the
sidecar's reserve and commit until the agent's budget is used up; then it exits 0.
"""

import argparse
import asyncio
import random
import sys

import httpx
from rich.console import Console

from iron.demo import AgentRun, runtime
from iron.money import usd
from sidecar.client import DEFAULT_URL, AsyncSidecarClient


async def run(args: argparse.Namespace, console: Console) -> AgentRun:
    agent = AgentRun(args.name, budget_micros=0, runtimes_left=args.concurrency)
    async with AsyncSidecarClient(args.sidecar) as sidecar, httpx.AsyncClient(timeout=30) as llm:
        await asyncio.gather(
            *(
                runtime(agent, sidecar, llm, random.Random(f"{args.seed}/{args.name}/{n}"), console)
                for n in range(args.concurrency)
            )
        )
    return agent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runtime", description=__doc__)
    parser.add_argument(
        "--sidecar", default=DEFAULT_URL, help=f"the sidecar's base URL (default {DEFAULT_URL})"
    )
    parser.add_argument("--name", default="runtime", help="what the log calls this agent")
    parser.add_argument("--concurrency", type=int, default=2, help="LLM calls in flight at once")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    console = Console(width=120)
    agent = asyncio.run(run(args, console))
    console.print(
        f"{agent.name}: {agent.calls} calls committed ${usd(agent.committed_micros, 6):.6f}"
        f" ({agent.committed_micros} microdollars), {agent.refusals} refusals"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
