"""End to end: virtual keys, their limits and tenant isolation, through the local host.

Model calls use the official `openai` SDK with a virtual key; the admin API uses plain HTTP with
the master key. Every test makes its own keys, so limits never leak between tests.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import LocalStack
from tools.stack import LOOPBACK, free_port, local_host

HELLO = [{"role": "user", "content": "hello there"}]
PRICED = "cirrus-priced"  # $0.00001 per input token, $0.00002 per output token


def chat(stack: LocalStack, key: str, model: str = "cirrus-local", **params):
    return stack.client(key).chat.completions.with_raw_response.create(model=model, messages=HELLO, **params)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def fresh_window(seconds: float, margin: float) -> None:
    """Wait, if need be, so the next `margin` seconds stay inside one UTC window of `seconds`."""
    into = time.time() % seconds
    if into > seconds - margin:
        time.sleep(seconds - into + 0.05)


# --- the admin API --------------------------------------------------------------------------


def test_admin_api_creates_lists_reads_updates_rotates_and_revokes(stack):
    created = stack.new_key(
        key_alias="billing-app",
        models=["cirrus-local"],
        max_budget=5,
        budget_duration="monthly",
        rpm_limit=100,
        metadata={"owner": "billing"},
        user_id="u-1",
        team_id="team-billing",
        duration="30d",
    )
    secret, key_id = created["key"], created["id"]
    assert secret.startswith("sk-cirrus-") and created["key_name"] == secret[:18] + "..."
    assert created["status"] == "active" and created["spend"] == 0 and created["expires"]
    with stack.admin() as admin:
        listed = admin.get("/v1/keys", params={"limit": 100}).json()
        assert key_id in [k["id"] for k in listed["data"]]
        assert all(k["key"] is None for k in listed["data"])  # a list never carries a secret
        assert admin.get(f"/v1/keys/{key_id}").json()["key"] is None
        patched = admin.patch(f"/v1/keys/{key_id}", json={"rpm_limit": None, "tpm_limit": 5000}).json()
        assert (patched["rpm_limit"], patched["tpm_limit"]) == (None, 5000)
        assert patched["key_alias"] == "billing-app"
        rotated = admin.post(f"/v1/keys/{key_id}/rotate")
        assert rotated.status_code == 200 and rotated.headers["cache-control"] == "no-store"
        new_secret = rotated.json()["key"]
        assert new_secret != secret and rotated.json()["id"] == key_id
        with pytest.raises(openai.AuthenticationError):  # the old secret stops at once
            chat(stack, secret)
        assert chat(stack, new_secret).http_response.status_code == 200
        deleted = admin.delete(f"/v1/keys/{key_id}").json()
        assert deleted["deleted"] is True and deleted["id"] == key_id
        assert admin.get(f"/v1/keys/{key_id}").json()["status"] == "revoked"
        assert key_id not in [k["id"] for k in admin.get("/v1/keys", params={"limit": 100}).json()["data"]]
    with pytest.raises(openai.AuthenticationError) as info:
        chat(stack, new_secret)
    assert info.value.code == "invalid_api_key"


def test_admin_api_refuses_other_keys_and_bad_input(stack):
    plain = stack.new_key()["key"]
    response = httpx.get(f"{stack.base_url}/v1/keys", headers=bearer(plain))
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
    assert httpx.post(f"{stack.base_url}/v1/keys", headers=bearer(plain), json={}).status_code == 403
    with stack.admin() as admin:
        for body, param in [
            ({"key": "sk-my-own-secret"}, "key"),
            ({"budget_duration": "fortnightly"}, "budget_duration"),
            ({"rpm_limit": 0}, "rpm_limit"),
            ({"max_budget": -1}, "max_budget"),
            ({"models": ["cirrus-locl"]}, "models"),
        ]:
            response = admin.post("/v1/keys", json=body)
            assert response.status_code == 400, body
            assert response.json()["error"]["param"] == param
        missing = admin.get("/v1/keys/key_0000000000000000")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert admin.post("/v1/keys/nope/rotate").status_code == 404


# --- authentication and model access -------------------------------------------------------


def test_missing_unknown_revoked_and_expired_keys_are_401(stack):
    revoked = stack.new_key()
    with stack.admin() as admin:
        admin.delete(f"/v1/keys/{revoked['id']}").raise_for_status()
    expired = stack.new_key(expires="2020-01-01T00:00:00Z")
    fake = "sk-cirrus-" + "0" * 16 + "x" * 43
    for key in [None, fake, revoked["key"], expired["key"]]:
        response = httpx.post(
            f"{stack.base_url}/v1/chat/completions",
            headers=bearer(key) if key else {},
            json={"model": "cirrus-local", "messages": HELLO},
        )
        assert response.status_code == 401, key
        assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_key_may_use_only_its_models(stack):
    key = stack.new_key(models=["cirrus-local"])["key"]
    assert chat(stack, key).http_response.status_code == 200
    with pytest.raises(openai.PermissionDeniedError) as info:
        chat(stack, key, model="cirrus-embed")
    assert info.value.status_code == 403 and info.value.code == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError):
        stack.client(key).embeddings.create(model="cirrus-embed", input="x")
    assert [m.id for m in stack.client(key).models.list().data] == ["cirrus-local"]
    with pytest.raises(openai.NotFoundError):
        stack.client(key).models.retrieve("cirrus-embed")


# --- rate limits ----------------------------------------------------------------------------


def test_rpm_limit_with_openai_headers_then_429(stack, provider):
    key = stack.new_key(rpm_limit=3)["key"]
    fresh_window(60, 10)
    remaining = []
    for _ in range(3):
        response = chat(stack, key)
        remaining.append(response.headers["x-ratelimit-remaining-requests"])
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        assert response.headers["x-ratelimit-reset-requests"].endswith("s")
    assert remaining == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as info:
        chat(stack, key)
    error = info.value
    assert error.code == "rate_limit_exceeded" and error.type == "requests"
    assert 1 <= int(error.response.headers["retry-after"]) <= 60
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(provider.get("/_control/requests").json()) == 3  # the 4th never left


def test_tpm_limit_counts_real_tokens_then_429(stack):
    key = stack.new_key(tpm_limit=20)["key"]
    fresh_window(60, 10)
    first = chat(stack, key, max_tokens=40)
    assert first.headers["x-ratelimit-limit-tokens"] == "20"
    assert first.headers["x-ratelimit-remaining-tokens"] == "20"
    assert first.parse().usage.total_tokens > 20
    with pytest.raises(openai.RateLimitError) as info:  # counted before the first response ended
        chat(stack, key)
    assert info.value.type == "tokens" and info.value.response.headers["x-ratelimit-remaining-tokens"] == "0"


def test_a_stream_counts_against_the_limits_by_the_time_it_ends(stack):
    one_at_a_time = stack.new_key(max_parallel_requests=1)["key"]
    few_tokens = stack.new_key(tpm_limit=20)["key"]
    fresh_window(60, 10)
    for key in (one_at_a_time, few_tokens):
        stream = stack.client(key).chat.completions.create(
            model="cirrus-local", messages=HELLO, max_tokens=40, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert chat(stack, one_at_a_time).http_response.status_code == 200  # its hold is gone
    with pytest.raises(openai.RateLimitError) as info:  # and its tokens are counted
        chat(stack, few_tokens)
    assert info.value.type == "tokens"


def test_parallel_request_cap(stack, provider):
    key = stack.new_key(max_parallel_requests=2)["key"]
    provider.post(
        "/_control/enqueue", json={"behaviour": {"latency_ms": 1500}, "times": 2}
    ).raise_for_status()

    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(key), timeout=30) as client:
            body = {"model": "cirrus-local", "messages": HELLO}
            slow = [asyncio.create_task(client.post("/v1/chat/completions", json=body)) for _ in range(2)]
            await asyncio.sleep(0.7)
            third = await client.post("/v1/chat/completions", json=body)
            return [third.status_code, *[(await t).status_code for t in slow]]

    third, *slow = asyncio.run(run())
    assert third == 429 and slow == [200, 200]
    assert chat(stack, key).http_response.status_code == 200  # both finished: free again


# --- budgets --------------------------------------------------------------------------------


def test_budget_holds_under_50_concurrent_requests(stack):
    """Each request reserves its maximum cost before the call, so however the 50 race, the spend
    passes the budget by at most one request's maximum cost."""
    max_tokens = 20
    budget = 0.004
    created = stack.new_key(max_budget=budget)
    key, key_id = created["key"], created["id"]
    # The most one request can cost: LiteLLM counts this prompt as at most 20 tokens.
    max_cost = 20 * 0.00001 + max_tokens * 0.00002

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(key), timeout=60) as client:
            body = {"model": PRICED, "messages": HELLO, "max_tokens": max_tokens}
            return await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(50)))

    responses = asyncio.run(run())
    statuses = [r.status_code for r in responses]
    ok = statuses.count(200)
    refused = [r.json()["error"] for r in responses if r.status_code == 429]
    assert ok + len(refused) == 50, statuses
    assert ok >= 1 and refused and all(e["code"] == "insufficient_quota" for e in refused)
    spent = sum(cost_of(r.json()["usage"]) for r in responses if r.status_code == 200)
    assert spent <= budget + max_cost
    with stack.admin() as admin:
        deadline = time.time() + 10
        while not math.isclose(admin.get(f"/v1/keys/{key_id}").json()["spend"], spent, rel_tol=1e-6):
            assert time.time() < deadline, "the spend never settled"
            time.sleep(0.2)


def test_budget_resets_with_its_period(stack):
    key = stack.new_key(max_budget=0.0001, budget_duration="4s")["key"]
    fresh_window(4, 2.5)
    chat(stack, key, model=PRICED, max_tokens=10)  # spends the whole budget (and a little more)
    deadline = time.time() + 2
    while True:
        try:
            chat(stack, key, model=PRICED, max_tokens=10)
        except openai.RateLimitError as exc:
            assert exc.code == "insufficient_quota"
            break
        assert time.time() < deadline, "the budget never applied"
    time.sleep(4 - time.time() % 4 + 0.1)  # the next period
    assert chat(stack, key, model=PRICED, max_tokens=10).http_response.status_code == 200


def cost_of(usage: dict) -> float:
    return usage["prompt_tokens"] * 0.00001 + usage["completion_tokens"] * 0.00002


# --- revocation across instances -------------------------------------------------------------


@pytest.fixture(scope="module")
def second_host(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Another local host process on the same emulators and database: a second instance."""
    port = free_port()
    host = local_host(port, stack.env, tmp_path_factory.mktemp("second-host") / "funchost.log").start()
    try:
        host.wait_ready()
        yield f"http://{LOOPBACK}:{port}"
    finally:
        host.stop()


def test_revocation_and_rotation_hold_on_another_instance(stack, second_host):
    created = stack.new_key()
    other = openai.OpenAI(base_url=f"{second_host}/v1", api_key=created["key"], max_retries=0)
    assert other.chat.completions.create(model="cirrus-local", messages=HELLO).choices
    with stack.admin() as admin:
        rotated = admin.post(f"/v1/keys/{created['id']}/rotate").json()["key"]
        with pytest.raises(openai.AuthenticationError):
            other.chat.completions.create(model="cirrus-local", messages=HELLO)
        other = openai.OpenAI(base_url=f"{second_host}/v1", api_key=rotated, max_retries=0)
        assert other.chat.completions.create(model="cirrus-local", messages=HELLO).choices
        admin.delete(f"/v1/keys/{created['id']}").raise_for_status()
    with pytest.raises(openai.AuthenticationError):  # the very next request, on the other instance
        other.chat.completions.create(model="cirrus-local", messages=HELLO)


# --- tenant isolation -----------------------------------------------------------------------


def test_sessions_belong_to_their_key_or_team(stack):
    alice, bob = stack.new_key()["key"], stack.new_key()["key"]
    carol, dave = (stack.new_key(team_id="team-cd")["key"] for _ in range(2))
    base = stack.base_url
    session = httpx.post(f"{base}/v1/sessions", headers=bearer(alice), json={"title": "private"}).json()
    path = f"{base}/v1/sessions/{session['id']}"
    assert httpx.get(path, headers=bearer(alice)).status_code == 200
    for response in (
        httpx.get(path, headers=bearer(bob)),
        httpx.delete(path, headers=bearer(bob)),
        httpx.post(
            f"{base}/v1/chat/completions",
            headers={**bearer(bob), "x-session-id": session["id"]},
            json={"model": "cirrus-local", "messages": HELLO},
        ),
    ):
        assert response.status_code == 404 and "private" not in response.text
    listed = httpx.get(f"{base}/v1/sessions", headers=bearer(bob), params={"limit": 100}).json()
    assert session["id"] not in [s["id"] for s in listed["data"]]
    assert httpx.get(path, headers=bearer(stack.master_key)).status_code == 200  # the master sees all
    shared = httpx.post(f"{base}/v1/sessions", headers=bearer(carol), json={}).json()
    assert httpx.get(f"{base}/v1/sessions/{shared['id']}", headers=bearer(dave)).status_code == 200
    assert httpx.get(f"{base}/v1/sessions/{shared['id']}", headers=bearer(alice)).status_code == 404


def test_usage_is_scoped_to_the_key_and_grouped_by_key_and_team_for_the_master(stack):
    alice = stack.new_key(team_id="team-usage")
    bob = stack.new_key()
    chat(stack, alice["key"])
    chat(stack, bob["key"])
    chat(stack, bob["key"])

    def usage(key: str, **params) -> httpx.Response:
        return httpx.get(f"{stack.base_url}/v1/usage", headers=bearer(key), params=params)

    deadline = time.time() + 10  # records are written just after the responses
    while usage(bob["key"]).json()["total"]["requests"] < 2:
        assert time.time() < deadline
        time.sleep(0.2)
    assert usage(bob["key"]).json()["total"]["requests"] == 2
    assert usage(alice["key"]).json()["total"]["requests"] == 1
    assert usage(alice["key"], group_by="key").status_code == 403
    by_key = {g["group"]: g["requests"] for g in usage(stack.master_key, group_by="key").json()["data"]}
    assert by_key[alice["id"]] == 1 and by_key[bob["id"]] == 2
    by_team = {g["group"]: g["requests"] for g in usage(stack.master_key, group_by="team").json()["data"]}
    assert by_team["team-usage"] >= 1


# --- secrets stay secret --------------------------------------------------------------------


def test_no_key_material_reaches_the_host_log(stack):
    created = stack.new_key(rpm_limit=1)
    secret = created["key"]
    fresh_window(60, 10)  # both requests in one minute, so the second is refused
    chat(stack, secret)
    with pytest.raises(openai.RateLimitError):
        chat(stack, secret)
    with pytest.raises(openai.AuthenticationError):
        chat(stack, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    done = "Executed 'Functions.revoke_key'"
    deletes = stack.log.read_text().count(done)
    with stack.admin() as admin:
        rotated = admin.post(f"/v1/keys/{created['id']}/rotate").json()["key"]
        admin.delete(f"/v1/keys/{created['id']}")
    # The worker's log lines travel the gRPC stream in order, before each invocation's response:
    # once the host logged the delete's end, every line of this test's requests is in the log.
    deadline = time.monotonic() + 10
    while (log := stack.log.read_text()).count(done) == deletes:
        assert time.monotonic() < deadline, "the delete's invocation never ended in the host log"
        time.sleep(0.1)
    assert created["id"] in log  # keys are named in the log by id...
    for material in (secret, secret[18:], rotated, rotated[18:], stack.master_key):
        assert material not in log  # ...never by secret
