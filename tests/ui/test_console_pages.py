"""Each console page's main flow in a browser, markup in content shown as text, a virtual key's
limited view, the strict CSP holding on every page, and the first load's weight."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import openai
import pytest
from playwright.sync_api import ConsoleMessage, Page, Route, expect

from tests.e2e.helpers import api, chat_line, submit, upload, wait, wait_batch

MARKUP = '<img src=x onerror="window.__xss=1"> <script>window.__xss=2</script> <b>bold?</b>'


@pytest.fixture
def csp_violations(browser_page: Page) -> list[str]:
    """Every CSP refusal the page reports; a page that needs inline script or style shows up here."""
    seen: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            seen.append(message.text)

    browser_page.on("console", on_console)
    browser_page.on("pageerror", lambda error: seen.append(f"pageerror: {error}"))
    return seen


def chat(stack, key: str | None = None, text: str = "Hello") -> None:
    stack.client(key).chat.completions.create(
        model="cirrus-local", messages=[{"role": "user", "content": text}]
    )


def wait_for_usage(stack, key: str | None = None, at_least: int = 1) -> None:
    """Usage records are written after the answer: wait until the console can see them."""
    with api(stack, key) as client:
        for _ in range(100):
            records = client.get("/v1/usage/records", params={"limit": at_least}).json()["data"]
            summed = client.get("/v1/usage").json()["total"]["requests"]
            if len(records) >= at_least and summed >= at_least:
                return
            time.sleep(0.1)
    raise AssertionError("no usage records appeared")


def test_overview_charts_totals_and_rates(
    browser_page: Page, stack, master_key, sign_in, screenshot, csp_violations
):
    chat(stack)
    wait_for_usage(stack)
    page = browser_page
    sign_in(page, master_key)

    for title in ("Requests per day by model", "Tokens per day by model", "Cost per day by model (USD)"):
        figure = page.locator("figure", has_text=title)
        expect(figure.locator("canvas")).to_have_count(1)  # drawn by uPlot, not hand-made SVG
    totals = page.get_by_role("region", name="Totals")
    for label in ("Requests", "Tokens", "Cost", "Error rate", "Fallback rate"):
        expect(totals).to_contain_text(label)
    expect(page.get_by_role("heading", name="Top models")).to_be_visible()
    expect(page.get_by_role("heading", name="Top keys")).to_be_visible()
    expect(page.get_by_role("table", name="Top models")).to_contain_text("cirrus-local")
    screenshot(page, "overview")

    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # no sideways scrolling
    screenshot(page, "overview-phone")
    assert csp_violations == []


def test_first_load_is_light_and_reaches_the_chart_in_three_round_trips(
    browser_page: Page, stack, master_key, sign_in, console_url
):
    chat(stack)
    wait_for_usage(stack)
    page = browser_page
    sign_in(page, master_key)  # the cookie; the reload below starts from an empty cache

    client = page.context.new_cdp_session(page)
    client.send("Network.enable")
    client.send("Network.clearBrowserCache")
    client.send("Network.setCacheDisabled", {"cacheDisabled": True})
    received: dict[str, int] = {}
    urls: dict[str, str] = {}
    initiators: dict[str, str] = {}
    sent: dict[str, float] = {}
    finished: dict[str, float] = {}

    def on_response(event: dict) -> None:
        urls[event["requestId"]] = event["response"]["url"]

    def on_sent(event: dict) -> None:
        frames = event.get("initiator", {}).get("stack", {}).get("callFrames") or [{}]
        initiators[event["request"]["url"]] = event.get("initiator", {}).get("url") or frames[-1].get(
            "url", ""
        )
        sent[event["request"]["url"]] = event["timestamp"]

    def on_finished(event: dict) -> None:
        received[event["requestId"]] = int(event["encodedDataLength"])
        finished[urls.get(event["requestId"], "")] = event["timestamp"]

    client.on("Network.responseReceived", on_response)
    client.on("Network.requestWillBeSent", on_sent)
    client.on("Network.loadingFinished", on_finished)
    page.goto(console_url)
    expect(page.locator("figure canvas").first).to_be_visible()
    page.wait_for_load_state("networkidle")

    total = sum(received.values())
    assert total < 300_000, f"first load transferred {total} bytes"
    paths = {re.sub(r"^https?://[^/]+", "", url).split("?")[0] for url in urls.values()}
    assert {
        "/console",
        "/console/js/app.js",
        "/console/css/console.css",
        "/console/vendor/uPlot.esm.js",
    } <= paths
    # Round trips: the page; then everything it names (module, styles, the preloaded uPlot);
    # then the data, which the module asks for at once — the session check does not hold it up.
    # No module imports another that the page did not preload, so there is no fourth hop.
    for url, initiator in initiators.items():
        if "/v1/usage/series" in url or url.endswith("/console/api/session"):
            assert initiator.endswith("/console/js/app.js"), (url, initiator)
    session = next(u for u in sent if u.endswith("/console/api/session"))
    series = next(u for u in sent if "/v1/usage/series" in u)
    assert sent[series] < finished[session], "the chart's data waited for the session check"
    uplot = next(u for u in sent if u.endswith("/vendor/uPlot.esm.js"))
    app = next(u for u in sent if u.endswith("/js/app.js"))
    assert sent[uplot] < finished[app], "uPlot was not preloaded alongside the module"
    print(f"first load: {total} bytes over {len(received)} responses: {sorted(paths)}")


def test_keys_create_edit_rotate_revoke(browser_page: Page, master_key, sign_in, screenshot, csp_violations):
    page = browser_page
    sign_in(page, master_key)
    page.get_by_role("link", name="Keys").click()

    form = page.get_by_role("form", name="Create key")
    form.get_by_label("Name").fill("ui-team")
    form.get_by_label("Models").fill("cirrus-local")
    form.get_by_label("Budget (USD)").fill("5")
    form.get_by_label("Requests per minute").fill("60")
    form.get_by_label("Tokens per minute").fill("10000")
    form.get_by_label("Expires on").fill("2099-12-31")
    page.get_by_role("button", name="Create key").click()

    secret = page.locator(".secret")
    expect(secret).to_have_text(re.compile(r"^sk-"))
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    first_secret = secret.text_content()
    row = page.get_by_role("row", name=re.compile("ui-team"))
    expect(row).to_contain_text("60")
    expect(row).to_contain_text("2099-12-31")
    screenshot(page, "keys")

    row.get_by_role("button", name="Edit limits of ui-team").click()
    edit = page.get_by_role("form", name="Edit limits of ui-team")
    edit.get_by_label("rpm").fill("120")
    edit.get_by_role("button", name="Save").click()
    expect(page.get_by_role("row", name=re.compile("ui-team"))).to_contain_text("120")

    page.get_by_role("button", name="Rotate ui-team").click()
    expect(secret).not_to_have_text(first_secret or "")
    expect(secret).to_have_text(re.compile(r"^sk-"))

    revoke = page.get_by_role("button", name="Revoke ui-team")
    revoke.click()
    revoke.click()  # the second press confirms
    expect(page.get_by_role("status")).to_have_text("Revoked ui-team.")
    expect(page.get_by_role("row", name=re.compile("ui-team"))).to_have_count(0)  # the list shows live keys
    assert csp_violations == []


def test_usage_records_filter_and_csv_export(
    browser_page: Page, stack, master_key, new_key, sign_in, screenshot
):
    other = new_key(key_alias="ui-usage")
    chat(stack, other["key"])
    chat(stack)
    wait_for_usage(stack, at_least=2)
    # Earlier tests' records can satisfy the count above before this key's record is written
    # (the worker flushes usage after the answer): wait for the key's own record as well.
    wait_for_usage(stack, other["key"])
    page = browser_page
    sign_in(page, master_key)
    page.get_by_role("link", name="Usage").click()
    records = page.get_by_role("table", name="Usage records")
    expect(records).to_contain_text("cirrus-local")

    page.get_by_label("Key id").fill(other["id"])
    page.get_by_role("button", name="Filter").click()
    expect(records.locator("tbody tr").first).to_contain_text(other["id"])
    for row in records.locator("tbody tr").all():
        expect(row).to_contain_text(other["id"])
    screenshot(page, "usage")

    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    header, *lines = text.strip().splitlines()
    assert "model" in header and lines and all(other["id"] in line for line in lines)


def test_session_markup_shows_as_text_and_runs_nothing(
    browser_page: Page, stack, master_key, sign_in, screenshot, csp_violations
):
    with api(stack) as client:
        created = client.post(
            "/v1/sessions",
            json={
                "title": '<img src=x onerror="window.__xss=3">',
                "messages": [
                    {"role": "user", "content": MARKUP},
                    {"role": "assistant", "content": "<i>hi</i>"},
                ],
            },
        ).json()
    page = browser_page
    sign_in(page, master_key)
    page.get_by_role("link", name="Sessions").click()
    expect(page.get_by_role("table", name="Sessions")).to_contain_text(created["id"])
    page.get_by_role("row", name=re.compile(created["id"])).get_by_role(
        "link", name=re.compile("^Open")
    ).click()

    conversation = page.get_by_role("list", name="Messages")
    expect(conversation.locator(".msg.user .content")).to_have_text(MARKUP)
    expect(conversation.locator(".msg.assistant .content")).to_have_text("<i>hi</i>")
    expect(page.get_by_role("heading", level=1)).to_have_text('<img src=x onerror="window.__xss=3">')
    assert page.locator("main img, main script, main b, main i").count() == 0
    assert page.evaluate("window.__xss") is None
    screenshot(page, "sessions")

    delete = page.get_by_role("button", name=re.compile("^Delete session"))
    delete.click()
    delete.click()
    expect(page.get_by_role("heading", name="Sessions", exact=True)).to_be_visible()
    expect(page.locator("main")).not_to_contain_text(created["id"])
    assert csp_violations == []


def test_jobs_list_and_a_job_with_steps_and_live_events(
    browser_page: Page, stack, master_key, sign_in, screenshot, csp_violations
):
    with api(stack) as client:
        job = submit(client, type="agent", input="Say hi", max_steps=3)
        wait(client, job["id"])
    page = browser_page
    sign_in(page, master_key)
    page.get_by_role("link", name="Jobs").click()
    row = page.get_by_role("row", name=re.compile(job["id"]))
    expect(row).to_contain_text("completed")
    expect(row.get_by_role("progressbar", name=f"Progress of job {job['id']}")).to_be_visible()

    row.get_by_role("link", name=job["id"]).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Job {job['id']}")
    events = page.get_by_role("list", name="Live events")
    expect(events).to_contain_text("job.started")
    expect(events).to_contain_text("job.completed")
    expect(page.get_by_role("list", name="Steps").locator("li").first).to_be_visible()
    screenshot(page, "jobs")
    assert csp_violations == []


def test_jobs_cancel_from_the_job_view(browser_page: Page, stack, master_key, sign_in):
    # A job whose model call waits, so it is still running when the button is pressed.
    with stack.provider() as provider:
        provider.post(
            "/_control/enqueue", json={"behaviour": {"latency_ms": 8000}, "times": 1}
        ).raise_for_status()
    with api(stack) as client:
        job = submit(client, type="agent", input="Take your time", max_steps=3)
    page = browser_page
    sign_in(page, master_key)
    page.goto(f"/console#/jobs/{job['id']}")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Job {job['id']}")
    cancel = page.get_by_role("button", name="Cancel job")
    if not cancel.is_visible():
        pytest.skip("the job ended before the page opened")
    cancel.click()
    expect(page.locator(".facts .badge")).to_have_text(re.compile("^cancel"))
    with api(stack) as client:
        assert wait(client, job["id"])["status"] == "cancelled"


def test_batches_progress_and_download(browser_page: Page, stack, master_key, sign_in, screenshot):
    client = stack.client()
    done = client.batches.create(
        input_file_id=upload(client, [chat_line("a"), chat_line("b")]).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    wait_batch(client, done.id)
    page = browser_page
    sign_in(page, master_key)
    page.get_by_role("link", name="Batches").click()
    row = page.get_by_role("row", name=re.compile(done.id))
    bar = row.get_by_role("progressbar", name=f"Progress of batch {done.id}")
    expect(bar).to_have_attribute("value", "2")
    expect(row).to_contain_text("2/2")
    screenshot(page, "batches")

    with page.expect_download() as download:
        row.get_by_role("button", name=f"Download output of {done.id}").click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert sorted(line["custom_id"] for line in lines) == ["a", "b"]


def test_playground_streams_and_shows_deployment_fallback_and_cost(
    browser_page: Page, master_key, sign_in, screenshot, csp_violations
):
    page = browser_page
    sign_in(page, master_key)
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Model", exact=True).select_option("cirrus-local")
    page.get_by_label("System prompt").fill("Be brief.")
    page.get_by_label("Temperature").fill("0.2")
    page.get_by_label("Max tokens").fill("64")
    page.get_by_label("Message").fill("Hello <b>there</b>")
    page.get_by_role("button", name="Send").click()

    conversation = page.get_by_role("list", name="Conversation")
    expect(conversation.locator(".msg.user .content")).to_have_text("Hello <b>there</b>")
    expect(conversation.locator(".msg.assistant .content")).not_to_be_empty()
    meta = page.locator(".meta")
    expect(meta).to_contain_text("Deployment: ")
    expect(meta).to_contain_text("Fallback: no")
    expect(meta).to_contain_text(re.compile(r"Cost: \$\d"))
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    screenshot(page, "playground")
    assert csp_violations == []


def test_a_virtual_key_sees_no_keys_page_and_only_its_own_usage(
    browser_page: Page, stack, new_key, sign_in, screenshot
):
    mine = new_key(key_alias="ui-virtual")
    chat(stack)  # the master key's: must not show
    chat(stack, mine["key"])
    wait_for_usage(stack, mine["key"])
    page = browser_page
    sign_in(page, mine["key"])

    expect(page.get_by_role("link", name="Keys")).to_have_count(0)
    requests = page.get_by_role("region", name="Totals").locator(".tile", has_text="Requests")
    expect(requests).to_have_text("Requests1")  # its one call, not the master key's
    expect(page.get_by_role("heading", name="Top keys")).to_have_count(0)
    page.goto("/console#/keys")
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    screenshot(page, "virtual-overview")

    page.get_by_role("link", name="Usage").click()
    records = page.get_by_role("table", name="Usage records")
    expect(records.locator("tbody tr").first).to_be_visible()
    for row in records.locator("tbody tr").all():
        expect(row).to_contain_text(mine["id"])
    expect(page.get_by_label("Key id")).to_have_count(0)


def test_an_entra_id_caller_signs_in_with_a_token_and_sees_its_own_usage(
    browser_page: Page, stack, sign_in, screenshot
):
    me = str(uuid.uuid4())
    with api(stack) as admin:
        assert admin.post("/v1/policies", json={"name": "ui-entra", "object_ids": [me]}).status_code == 201
    token = stack.entra_token(roles=["Cirrus.User"], oid=me, name="ana@contoso.test")
    chat(stack, token)
    wait_for_usage(stack, token)
    page = browser_page
    sign_in(page, token)

    expect(page.locator("#who")).to_have_text("Entra ID ana@contoso.test")
    expect(page.get_by_role("link", name="Keys")).to_have_count(0)
    requests = page.get_by_role("region", name="Totals").locator(".tile", has_text="Requests")
    expect(requests).to_have_text("Requests1")
    page.get_by_role("link", name="Usage").click()
    records = page.get_by_role("table", name="Usage records")
    expect(records.locator("tbody tr").first).to_be_visible()
    for row in records.locator("tbody tr").all():
        expect(row).to_contain_text(f"entra_{me}")
    screenshot(page, "entra-usage")

    admin_token = stack.entra_token(roles=["Cirrus.Admin"], oid=str(uuid.uuid4()), name="ops@contoso.test")
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, admin_token)
    expect(page.locator("#who")).to_have_text("Admin ops@contoso.test")
    expect(page.get_by_role("link", name="Keys")).to_be_visible()


def test_the_audit_page_says_who_revoked_a_key(browser_page: Page, stack, master_key, sign_in, screenshot):
    admin_token = stack.entra_token(roles=["Cirrus.Admin"], oid=str(uuid.uuid4()), name="ops@contoso.test")
    with api(stack, admin_token) as admin:
        key = admin.post("/v1/keys", json={"key_alias": "ui-audited", "rpm_limit": 5}).json()
        assert admin.patch(f"/v1/keys/{key['id']}", json={"rpm_limit": 7}).status_code == 200
        assert admin.delete(f"/v1/keys/{key['id']}").status_code == 200
    page = browser_page
    sign_in(page, master_key)
    page.goto(f"/console#/audit/{key['id']}")
    events = page.get_by_role("table", name="Audit events")
    expect(events.locator("tbody tr")).to_have_count(3)
    newest = events.locator("tbody tr").first
    expect(newest).to_contain_text("key.revoke")
    expect(newest).to_contain_text("ops@contoso.test")
    expect(events.locator("tbody tr").nth(1)).to_contain_text("rpm_limit: 5 → 7")
    screenshot(page, "audit")

    page.get_by_label("About (id)").fill("")
    page.get_by_label("Action").fill("key.revoke")
    page.get_by_role("button", name="Filter").click()
    expect(events.locator("tbody tr").first).to_contain_text("key.revoke")
    for row in events.locator("tbody tr").all():
        expect(row).to_contain_text("key.revoke")


def test_playground_stop_ends_the_stream(browser_page: Page, stack, master_key, sign_in):
    with stack.provider() as provider:
        slow = {"chunk_delay_ms": 300, "reply": " ".join(["word"] * 60)}
        provider.post("/_control/enqueue", json={"behaviour": slow, "times": 1}).raise_for_status()
    page = browser_page
    sign_in(page, master_key)
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Message").fill("Talk for a while")
    page.get_by_role("button", name="Send").click()
    answer = page.get_by_role("list", name="Conversation").locator(".msg.assistant .content")
    expect(answer).to_contain_text("word")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".meta")).to_contain_text("Stopped")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    assert (answer.text_content() or "").count("word") < 60


def test_a_page_left_while_loading_never_draws_into_the_next(browser_page: Page, master_key, sign_in):
    page = browser_page
    held: list[Route] = []

    def hold(route: Route) -> None:  # a plain function: Playwright cannot wrap a bound builtin
        held.append(route)

    page.route("**/v1/usage/series*", hold)
    sign_in(page, master_key)  # the overview starts loading and waits for its series
    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Usage")
    for route in held:
        route.continue_()
    page.unroute("**/v1/usage/series*")
    page.wait_for_timeout(500)
    expect(page.get_by_role("region", name="Totals")).to_have_count(0)
    expect(page.get_by_role("heading", level=1)).to_have_count(1)


def test_sign_in_and_navigation_work_from_the_keyboard(browser_page: Page, console_url: str, master_key: str):
    page = browser_page
    page.goto(console_url)
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type(master_key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name="Overview")).to_be_visible()
    page.get_by_role("link", name="Overview").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Keys")).to_be_focused()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # focus is visible
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Keys")
    page.get_by_label("Name").focus()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"


def test_batches_cancel_a_running_batch(browser_page: Page, stack, master_key, sign_in):
    client = stack.client()
    with stack.provider() as provider:
        slow = {"behaviour": {"latency_ms": 6000}, "times": 4}
        provider.post("/_control/enqueue", json=slow).raise_for_status()
    batch = client.batches.create(
        input_file_id=upload(client, [chat_line(f"slow-{i}") for i in range(4)]).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    page = browser_page
    sign_in(page, master_key)
    page.get_by_role("link", name="Batches").click()
    row = page.get_by_role("row", name=re.compile(batch.id))
    cancel = row.get_by_role("button", name=f"Cancel batch {batch.id}")
    expect(row).to_be_visible()
    if not cancel.is_visible():
        pytest.skip("the batch ended before the page opened")
    cancel.click()
    expect(page.get_by_role("row", name=re.compile(batch.id))).to_contain_text(re.compile("cancel"))
    assert wait_batch(client, batch.id).status == "cancelled"


def test_a_wrong_key_shows_the_error_and_keeps_nothing(browser_page: Page, console_url: str):
    page = browser_page
    page.goto(console_url)
    page.get_by_label("API key").fill("sk-cirrus-not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).not_to_be_empty()
    expect(page.get_by_label("API key")).to_have_value("")  # not left in the field either
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    assert page.context.cookies() == []


def test_a_session_ended_elsewhere_returns_to_sign_in(browser_page: Page, master_key, sign_in):
    page = browser_page
    sign_in(page, master_key)
    # Let the overview finish loading first: a 401 on one of its own requests would already send
    # the page back to sign-in, and the Sessions link would be gone before the test clicks it.
    page.wait_for_load_state("networkidle")
    page.context.clear_cookies()  # as if signed out in another tab, or the cookie expired
    page.get_by_role("link", name="Sessions").click()
    expect(page.get_by_label("API key")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Sign in again")


def test_the_overview_counts_a_request_made_this_second(browser_page: Page, stack, new_key, sign_in):
    # The browser's clock a few seconds behind the server's: a window ending at the browser's
    # "now" would miss the request just made (it did, in about one run in three).
    mine = new_key(key_alias="ui-this-second")
    chat(stack, mine["key"])
    wait_for_usage(stack, mine["key"])
    page = browser_page
    page.clock.install(time=time.time() - 5)
    page.clock.resume()
    sign_in(page, mine["key"])
    requests = page.get_by_role("region", name="Totals").locator(".tile", has_text="Requests")
    expect(requests).to_have_text("Requests1")


def test_policies_create_edit_and_delete_and_the_caller_they_cover(
    browser_page: Page, stack, master_key, sign_in, screenshot
):
    me = str(uuid.uuid4())
    page = browser_page
    sign_in(page, master_key)
    page.get_by_role("link", name="Policies").click()
    form = page.get_by_role("form", name="Create policy")
    form.get_by_label("Name").fill("ui-policy")
    form.get_by_label("Object ids").fill(me)
    form.get_by_label("Team").fill("ui-team")
    form.get_by_label("Requests per minute").fill("30")
    form.get_by_role("button", name="Create policy").click()
    row = page.get_by_role("table", name="Policies").locator("tbody tr", has_text="ui-policy")
    expect(row).to_contain_text(f"object {me}")
    expect(row).to_contain_text("ui-team")
    token = stack.entra_token(roles=["Cirrus.User"], oid=me)
    reply = stack.client(token).chat.completions.with_raw_response.create(
        model="cirrus-local", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.headers["x-ratelimit-limit-requests"] == "30"  # the policy the page made

    row.get_by_role("button", name="Edit limits of ui-policy").click()
    page.get_by_role("form", name="Edit limits of ui-policy").get_by_label("rpm").fill("45")
    page.get_by_role("form", name="Edit limits of ui-policy").get_by_role("button", name="Save").click()
    expect(row.locator("td").nth(4)).to_have_text("45")
    screenshot(page, "policies")

    delete = row.get_by_role("button", name="Delete ui-policy")
    delete.click()
    expect(delete).to_have_text("Confirm delete")  # two steps, as revoking a key
    delete.click()
    expect(page.get_by_role("status")).to_have_text("Deleted ui-policy.")
    expect(
        page.get_by_role("table", name="Policies").locator("tbody tr", has_text="ui-policy")
    ).to_have_count(0)
    with pytest.raises(openai.PermissionDeniedError):
        stack.client(token).chat.completions.create(
            model="cirrus-local", messages=[{"role": "user", "content": "hi"}]
        )
