"""The console's shell: served with its CSP, sign in with the master key, the navigation, sign out."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.ui.conftest import NAV


def test_sign_in_with_the_master_key_shows_the_navigation_and_sign_out_ends_it(
    browser_page: Page, console_url: str, master_key: str, sign_in, screenshot
):
    page = browser_page
    response = page.goto(console_url)
    assert response is not None and response.ok
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"

    sign_in(page, master_key)
    for name in NAV:
        expect(page.get_by_role("link", name=name)).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "cirrus_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert master_key not in cookie["value"]
    assert master_key not in str(page.evaluate("() => JSON.stringify(localStorage)"))
    screenshot(page, "shell")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    # The session is over on the server, not just forgotten by the page: the old cookie is refused.
    replay = httpx.get(f"{console_url}/api/session", cookies={"cirrus_console": cookie["value"]}, timeout=10)
    assert replay.status_code == 401
