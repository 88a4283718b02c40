"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright.

A real control-plane process and a real sidecar; an admin signs in through the
page, watches an agent's bar move while a runtime spends through the sidecar,
and approves a budget request, all on one page load. Screenshots go to
``artifacts/dashboard/`` (git-ignored).
"""

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from iron.embedded import free_port
from sidecar.client import AsyncSidecarClient
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, MakeAgent, start_control_plane
from tests.sidecar.fault_processes import ServerProcess, sidecar_argv

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard"
TIMEOUT_MS = 15_000
BAR_TRANSITION_MS = 600  # the bars' CSS transition is 0.4 s
HOSTILE_NAME = '<img src=x onerror="window.ironInjected=1">'

# On a fresh machine with only Python the test is skipped; on CI (.ci/run installs Chromium) it must run.
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="Chromium is not installed (Debian: apt-get install -y chromium)",
)


async def test_sign_in_watch_spend_live_and_approve_a_request_without_reloading(
    env: dict[str, str],
    make_agent: MakeAgent,
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    redis_url: str,
    tmp_path: Path,
) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = await start_control_plane(env, tmp_path, "cp-dashboard")
    agent = await make_agent(budget=5)
    hostile = await client.post(  # a name that is markup must show as text
        "/api/v1/agents", headers=admin_headers, json={"name": HOSTILE_NAME, "budget": 1}
    )
    assert hostile.status_code == 201, hostile.text
    port = free_port()
    sidecar = ServerProcess(
        "sidecar-dashboard",
        sidecar_argv(port),
        {
            "IRON_CONTROL_PLANE_URL": server.url,
            "IRON_IC_TOKEN": agent.ic_token,
            "REDIS_URL": redis_url,
            "IRON_SIDECAR_ID": f"{agent.id}-dashboard",
            "IRON_FLUSH_AGE_MS": "50",
        },
        port,
        tmp_path,
        "/healthz",
    )
    await sidecar.start_ready()
    page_errors: list[str] = []  # uncaught exceptions and CSP violations, not the 404 of the time series
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on(
                "console",
                lambda m: (
                    page_errors.append(m.text)
                    if m.type == "error" and not m.text.startswith("Failed to load resource")
                    else None
                ),
            )
            navigations: list[str] = []
            page.on("framenavigated", lambda f: navigations.append(f.url) if f == page.main_frame else None)

            response = await page.goto(server.url + "/")
            assert response is not None
            assert "default-src 'none'" in (await response.all_headers())["content-security-policy"]
            await page.fill("#email", ADMIN_EMAIL)
            await page.fill("#password", ADMIN_PASSWORD)
            await page.click("#sign-in-form button[type=submit]")
            row = page.locator(f'li[data-agent-id="{agent.id}"]')
            await expect(row.locator(".spent")).to_have_text("$0.00", timeout=TIMEOUT_MS)
            await expect(page.locator("#live")).to_have_attribute("data-state", "on", timeout=TIMEOUT_MS)
            await expect(page.locator("#chart line.axis")).to_have_count(1)  # the chart is drawn
            hostile_row = page.locator(f'li[data-agent-id="{hostile.json()["id"]}"] .name')
            await expect(hostile_row).to_have_text(HOSTILE_NAME)
            assert await page.locator("#agents img").count() == 0
            await page.screenshot(path=str(ARTIFACTS / "1-signed-in.png"), full_page=True)
            await page.evaluate("window.ironSamePage = true")

            # a runtime spends $4.50 of the $5 budget through the sidecar: the bar moves live
            async with AsyncSidecarClient(sidecar.url) as runtime:
                for _ in range(9):
                    async with runtime.spend(0.5) as call:
                        call.cost_usd, call.model = 0.5, "gpt-4o-mini"
                        call.input_tokens, call.output_tokens = 1200, 300
            await expect(row.locator(".spent")).to_have_text("$4.50", timeout=TIMEOUT_MS)
            await expect(row.locator(".fill")).to_have_attribute("style", "width: 90%;")
            await expect(row).to_have_attribute("data-level", "warning")  # past the 80 % alert
            await expect(page.locator('#feed li[data-type="COST_ALERT"]')).to_have_count(1)
            await expect(page.locator('#feed li[data-type="AGENT_EVENT"]')).to_have_count(9)
            # the admin sees every agent of the suite; this hour's bar holds at least this spend
            this_hour = page.locator(f'#chart rect.chart-bar[data-hour="{datetime.now(UTC).hour}"]')
            await expect(this_hour).to_have_count(1)
            await expect(page.locator("#chart-empty")).to_be_hidden()
            await page.wait_for_timeout(BAR_TRANSITION_MS)  # a still picture, not an assertion
            await page.screenshot(path=str(ARTIFACTS / "2-spending-live.png"), full_page=True)

            filed = await client.post(
                "/api/v1/budget-requests",
                headers=admin_headers,
                json={
                    "agent_id": agent.id,
                    "requested_budget": 20,
                    "justification": "more evaluation runs this week",
                },
            )
            assert filed.status_code == 201, filed.text
            request_row = page.locator(f'tr[data-request-id="{filed.json()["id"]}"]')
            await expect(request_row).to_be_visible(timeout=TIMEOUT_MS)  # arrived over the feed
            await page.screenshot(path=str(ARTIFACTS / "3-request-pending.png"), full_page=True)
            await request_row.locator("button.approve").click()
            await expect(row.locator(".budget")).to_have_text("$20.00", timeout=TIMEOUT_MS)
            await expect(row).to_have_attribute("data-level", "ok")  # 22.5 % of the new budget
            await expect(request_row).to_have_count(0)
            await page.wait_for_timeout(BAR_TRANSITION_MS)
            await page.screenshot(path=str(ARTIFACTS / "4-approved.png"), full_page=True)

            assert await page.evaluate("window.ironSamePage") is True, "the page was reloaded"
            assert await page.evaluate("window.ironInjected") is None
            assert navigations == [server.url + "/"], navigations
            await browser.close()
    finally:
        sidecar.cleanup()
        server.cleanup()
    assert page_errors == []
    decided = await client.get(f"/api/v1/budget-requests/{filed.json()['id']}", headers=admin_headers)
    assert decided.json()["status"] == "approved"
