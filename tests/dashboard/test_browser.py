"""The dashboard in a real browser: Debian's chromium driven by Playwright against the shared
server. One walk through what a person does (sign in with the printed token, watch a session
run live, make and revoke a token, compare providers, sign out), a screenshot of every page in
docs/screenshots/, and proof that no request leaves the host."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def page() -> Iterator[Any]:
    """A fresh Chromium page, and Playwright stopped again when the test ends.

    Not pytest-playwright's fixtures: its session-scoped Playwright keeps an event loop
    running in the main thread until the whole session ends, which breaks every asyncio test
    that runs after it on the shared server."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is required for the dashboard tests (apt install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            yield context.new_page()
            context.close()
        finally:
            browser.close()


@pytest.fixture
def requests_seen(page: Any) -> Iterator[list[str]]:
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    yield seen


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def nav(page: Any, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()


def test_a_person_uses_the_dashboard(
    page: Any, requests_seen: list[str], server: str, dash_token: str, dash_api: httpx.Client
) -> None:
    from playwright.sync_api import expect

    page.set_default_timeout(15_000)
    page.goto(f"{server}/dashboard/sessions")
    expect(page).to_have_url(f"{server}/dashboard/login")
    shot(page, "login")
    page.get_by_label("API token").fill("ck_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    page.get_by_label("API token").fill(dash_token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server}/dashboard/sessions")

    made = dash_api.post(
        "/v2/sessions", json={"compute": {"provider": "local"}, "session_name": "browser-walk"}
    )
    assert made.status_code == 201, made.text
    sid = made.json()["session_id"]
    try:
        assert dash_api.post(f"/v2/sessions/{sid}/run", json={"code": "echo first"}).is_success
        page.reload()
        page.get_by_role("link", name="browser-walk").first.click()
        expect(page).to_have_url(f"{server}/dashboard/sessions/{sid}")
        expect(page.locator("#transcript")).to_contain_text("first")
        # A run made through the API appears without a reload (the page polls every 2 s).
        ran = dash_api.post(f"/v2/sessions/{sid}/run", json={"code": "echo live-marker-77"})
        assert ran.is_success
        expect(page.locator("#transcript")).to_contain_text("live-marker-77", timeout=5_000)
        page.reload()
        page.wait_for_selector(".chart canvas, .chart:has-text('No runs')")
        shot(page, "session")
        nav(page, "Sessions")
        shot(page, "sessions")
        page.set_viewport_size({"width": 390, "height": 844})
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the sessions page scrolls sideways on a phone by {overflow}px"
        shot(page, "sessions-phone")
        page.set_viewport_size({"width": 1280, "height": 800})
    finally:
        dash_api.delete(f"/v2/sessions/{sid}")

    nav(page, "Tokens")
    page.get_by_label("Name (optional)").fill("browser-made")
    page.get_by_role("button", name="Create token").click()
    token = page.get_by_label("New API token").input_value()
    assert token.startswith("ck_")
    shot(page, "tokens")
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"}) as fresh:
        assert fresh.get("/v2/sessions").status_code == 200
        page.get_by_role("button", name="Revoke browser-made").click()
        page.get_by_role("button", name="Yes, revoke it").click()
        expect(page.locator("#tokens")).to_contain_text("revoked")
        deadline = time.time() + 10
        while fresh.get("/v2/sessions").status_code != 401:
            assert time.time() < deadline, "the revoked token still works"
            time.sleep(0.25)

    nav(page, "Computes")
    shot(page, "computes")
    nav(page, "Providers")
    shot(page, "providers")
    nav(page, "Compare")
    page.get_by_label("Samples per provider").fill("100")
    page.get_by_role("button", name="Run simulated stress test").click()
    expect(page.locator("#report")).to_contain_text("Recommended:")
    page.wait_for_selector("#report .chart canvas")
    shot(page, "compare")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{server}/dashboard/login")
    page.goto(f"{server}/dashboard/sessions")
    expect(page).to_have_url(f"{server}/dashboard/login")

    outside = [u for u in requests_seen if not u.startswith(server)]
    assert requests_seen and not outside, f"requests left the host: {outside}"
