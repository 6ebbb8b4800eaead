"""A browser app on another origin: the README's page, served from a second loopback port that the
host's CORS allows (`stack.web_origin`), streams a chat with `fetch` and follows a job's events with
`EventSource` and an event-stream token, in Chromium. The page is read from the README each time,
so the example there is the one that runs."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Page, expect

from tests.conftest import LocalStack
from tools.stack import LOOPBACK, free_port

README = Path(__file__).resolve().parents[2] / "README.md"
README_BASE = "http://127.0.0.1:7071"  # `make dev`'s address, as the README's examples use it
SECTION = "### Browser apps: CORS and event-stream tokens"


def readme_page(base_url: str) -> str:
    """The README's browser page, calling `base_url` instead of `make dev`'s address."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    found = re.search(r"^```html\n(.*?)^```", section, re.S | re.M)
    assert found, "the browser section has an html example"
    assert found[1].count(f'"{README_BASE}"') == 1, "the page names Cirrus's address once"
    return found[1].replace(README_BASE, base_url)


@contextlib.contextmanager
def serving(origin: str, html: str) -> Iterator[str]:
    """`html` at `origin` + "/" (a loopback origin), from a thread, until the block ends."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/":  # the browser's favicon request: nothing, and no console error
                self.send_response(204)
                self.end_headers()
                return
            body = html.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # quiet
            pass

    address = urlsplit(origin)
    assert address.hostname == LOOPBACK and address.port
    server = ThreadingHTTPServer((LOOPBACK, address.port), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{origin}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_on_another_origin_streams_a_chat_and_follows_a_job(
    browser_page: Page, stack: LocalStack, new_key: Callable[..., dict], screenshot
):
    page = browser_page
    assert urlsplit(stack.web_origin).port != urlsplit(stack.base_url).port  # another origin
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    with serving(stack.web_origin, readme_page(stack.base_url)) as url:
        page.goto(url)
        page.get_by_label("API key").fill(new_key(name="browser-app")["key"])

        page.get_by_role("button", name="Ask").click()
        answer = page.locator("#answer")
        expect(answer).to_have_attribute("data-done", "true")  # read to [DONE], chunk by chunk
        expect(answer).not_to_be_empty()
        expect(answer).to_have_attribute("data-request-id", re.compile(r"^req_[0-9a-f]{32}$"))

        page.get_by_role("button", name="Run a job").click()
        events = page.locator("#events")
        expect(events).to_contain_text("job.completed", timeout=30_000)
        log = events.inner_text()
        assert log.startswith("job.started ")
        assert "step.started" in log and "usage" in log
        screenshot(page, "browser-app")
    assert problems == []


def test_a_page_on_an_origin_not_listed_reads_nothing(browser_page: Page, stack: LocalStack, master_key: str):
    page = browser_page
    elsewhere = f"http://{LOOPBACK}:{free_port()}"
    with serving(elsewhere, "<!doctype html><title>elsewhere</title>") as url:
        page.goto(url)
        outcome = page.evaluate(
            """async ([base, key]) => {
                try {
                    const headers = { Authorization: "Bearer " + key };
                    const r = await fetch(base + "/v1/models", { headers });
                    return "read " + r.status;
                } catch (error) { return error.name; }
            }""",
            [stack.base_url, master_key],
        )
    assert outcome == "TypeError"  # the browser refused the preflight's answer: "Failed to fetch"
