"""The UI tier: Playwright (pytest-playwright) driving Debian's headless Chromium against the
same local stack as the e2e tier (`stack`, from tests/conftest.py: one stack per session).

Playwright's own browser download cannot reach its CDN here, so the browser is Debian's
`chromium` package (`make setup` installs it with apt-get when it is missing).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import LocalStack

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"  # screenshots, one a page (gitignored)
NAV = ("Overview", "Keys", "Usage", "Sessions", "Jobs", "Batches", "Playground")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium, headless; no sandbox, which needs user namespaces CI containers lack."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make setup` (it installs Debian's chromium).")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": ["--no-sandbox"]}


@pytest.fixture(scope="session")
def base_url(stack: LocalStack) -> str:
    """pytest-playwright's base URL: `page.goto("/console")` goes to the stack."""
    return stack.base_url


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any], base_url: str) -> dict[str, Any]:
    return {**browser_context_args, "base_url": base_url, "viewport": {"width": 1366, "height": 768}}


@pytest.fixture
def browser_page(page: Page) -> Page:
    """A fresh page (its own browser context, so no cookie carries over) on the stack."""
    return page


@pytest.fixture(scope="session")
def console_url(stack: LocalStack) -> str:
    return f"{stack.base_url}/console"


@pytest.fixture(scope="session")
def master_key(stack: LocalStack) -> str:
    return stack.master_key


@pytest.fixture
def new_key(stack: LocalStack) -> Callable[..., dict]:
    """`new_key(name=..., models=[...], ...)`: a fresh virtual key (`POST /v1/keys`'s answer,
    the secret in `key`)."""
    return stack.new_key


@pytest.fixture(scope="session")
def screenshot() -> Iterator[Callable[[Page, str], Path]]:
    """`screenshot(page, "overview")` saves tests/ui/artifacts/overview.png, the tier's artefact."""
    ARTIFACTS.mkdir(exist_ok=True)

    def save(page: Page, name: str) -> Path:
        path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_-]', '-', name)}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    yield save


@pytest.fixture
def sign_in(console_url: str) -> Callable[[Page, str], None]:
    """`sign_in(page, key)`: open the console, sign in with `key`, wait for the navigation."""

    def go(page: Page, key: str) -> None:
        page.goto(console_url)
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("link", name="Overview")).to_be_visible()

    return go
