"""End to end: event-stream tokens, so a browser's EventSource (which sends no headers) can follow a
job's events without an API key in the URL (shared/services/stream_tokens.py)."""

from __future__ import annotations

import time

import httpx

from tests.conftest import LocalStack
from tests.e2e.helpers import api, sse_events, submit, wait


def finished_job(stack: LocalStack, key: str) -> str:
    with api(stack, key) as client:
        job = submit(client, type="agent", input="What is 2 + 2?")
        assert wait(client, job["id"])["status"] == "completed"
    return job["id"]


def mint(stack: LocalStack, key: str, job_id: str) -> httpx.Response:
    with api(stack, key) as client:
        return client.post(f"/v1/jobs/{job_id}/events/token")


def without_key(stack: LocalStack) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, timeout=30)


def refused(response: httpx.Response, message: str) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"


def test_a_token_follows_its_jobs_events_without_a_key(stack: LocalStack) -> None:
    key = stack.new_key(name="browser")["key"]
    job_id = finished_job(stack, key)
    before = int(time.time())
    minted = mint(stack, key, job_id)
    assert minted.status_code == 200, minted.text
    assert minted.headers["cache-control"] == "no-store"
    body = minted.json()
    assert (body["object"], body["job_id"]) == ("job.events_token", job_id)
    assert before + 590 <= body["expires_at"] <= int(time.time()) + 600  # ten minutes
    with without_key(stack) as http:
        replay = http.get(f"/v1/jobs/{job_id}/events", params={"token": body["token"]})
        resumed = http.get(
            f"/v1/jobs/{job_id}/events", params={"token": body["token"]}, headers={"Last-Event-ID": "1"}
        )
    assert replay.status_code == 200
    assert replay.headers["content-type"].startswith("text/event-stream")
    kinds = [kind for kind, _ in sse_events(replay.text)]
    assert kinds[0] == "job.started" and kinds[-1] == "job.completed"
    assert [kind for kind, _ in sse_events(resumed.text)] == kinds[1:]  # EventSource's reconnection


def test_a_token_is_refused_for_another_job_and_on_any_other_route(stack: LocalStack) -> None:
    key = stack.new_key(name="browser")["key"]
    job_id, other_job = finished_job(stack, key), finished_job(stack, key)
    token = mint(stack, key, job_id).json()["token"]
    with without_key(stack) as http:
        refused(http.get(f"/v1/jobs/{other_job}/events", params={"token": token}), "another job")
        for method, path in (
            ("GET", f"/v1/jobs/{job_id}"),
            ("POST", f"/v1/jobs/{job_id}/cancel"),
            ("POST", f"/v1/jobs/{job_id}/events/token"),
            ("GET", "/v1/jobs"),
            ("GET", "/v1/models"),
        ):
            refused(http.request(method, path, params={"token": token}), "You didn't provide an API key")


def test_a_token_is_only_minted_for_a_job_the_caller_can_see(stack: LocalStack) -> None:
    owner, stranger = stack.new_key(name="owner")["key"], stack.new_key(name="stranger")["key"]
    job_id = finished_job(stack, owner)
    assert mint(stack, stranger, job_id).status_code == 404
    assert mint(stack, owner, "job_doesnotexist0000000000").status_code == 404
    with without_key(stack) as http:
        refused(http.post(f"/v1/jobs/{job_id}/events/token"), "You didn't provide an API key")


def test_an_api_key_in_the_url_is_never_accepted(stack: LocalStack) -> None:
    key = stack.new_key(name="browser")["key"]
    job_id = finished_job(stack, key)
    with without_key(stack) as http:
        for secret in (key, stack.master_key):
            response = http.get(f"/v1/jobs/{job_id}/events", params={"token": secret})
            refused(response, "API keys are never accepted in a URL")
            assert secret not in response.text
        refused(http.get(f"/v1/jobs/{job_id}/events", params={"token": "cst_forged.sig"}), "Invalid")


def test_revoking_the_key_ends_its_tokens(stack: LocalStack) -> None:
    created = stack.new_key(name="revoked")
    job_id = finished_job(stack, created["key"])
    token = mint(stack, created["key"], job_id).json()["token"]
    with stack.admin() as admin:
        assert admin.delete(f"/v1/keys/{created['id']}").status_code == 200
    with without_key(stack) as http:
        refused(http.get(f"/v1/jobs/{job_id}/events", params={"token": token}), "revoked")
