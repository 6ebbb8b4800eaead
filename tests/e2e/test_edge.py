"""End to end: inputs at the HTTP edge that once ended in a 500 or reached further than they
should (issue 15's review), each answered with a 4xx in the route's own envelope."""

from __future__ import annotations

import json
import time
import uuid

import httpx
from azure.storage.queue import QueueServiceClient

from tests.e2e.helpers import api, events, host_log_with, script, send_raw, submit, wait


def deep_tools(depth: int) -> dict:
    """A chat request whose tool schema nests `depth` objects: valid JSON, absurdly deep."""
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return {
        "model": "cirrus-local",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
    }


def deep_body(depth: int) -> bytes:
    return (
        b'{"model": "cirrus-local", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], '
        b'"metadata": ' + b"[" * depth + b"]" * depth + b"}"
    )


def test_deeply_nested_json_is_a_400_in_the_openai_envelope(stack):
    with api(stack) as client:
        response = client.post("/v1/chat/completions", json=deep_tools(300))
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and "nested" in error["message"]
        raw = client.post(
            "/v1/chat/completions", content=deep_body(1000), headers={"content-type": "application/json"}
        )
        assert raw.status_code == 400 and "nested" in raw.json()["error"]["message"]


def test_deeply_nested_json_is_a_400_in_anthropics_envelope_on_messages(stack):
    with api(stack) as client:
        response = client.post(
            "/v1/messages", content=deep_body(1000), headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "nested" in body["error"]["message"]


def test_a_last_event_id_of_non_ascii_digits_is_a_400(stack):
    with api(stack) as client:
        job = submit(client, type="agent", input="hi", timeout_s=1)
        # Headers arrive as latin-1: b"\xb2" is "²" to the server, which str.isdigit() accepts.
        for value in ("²".encode("latin-1"), "١٢".encode(), b"-1", b"1_0"):
            response = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": value})
            assert response.status_code == 400, (value, response.text)
            assert response.json()["error"]["param"] == "Last-Event-ID"
        for value in ("²", "١٢"):
            response = client.get(f"/v1/jobs/{job['id']}/events", params={"after": value})
            assert response.status_code == 400, (value, response.text)


def test_starting_after_of_non_ascii_digits_is_a_400(stack):
    with api(stack) as client:
        response = client.get(
            f"/v1/responses/resp_{uuid.uuid4().hex}", params={"stream": "true", "starting_after": "²"}
        )
    assert response.status_code == 400 and response.json()["error"]["param"] == "starting_after"


def test_usage_refuses_times_that_are_not_finite(stack):
    with api(stack) as client:
        for name in ("start", "end"):
            for value in ("nan", "-inf", "inf", "1e400", "NaN"):
                response = client.get("/v1/usage", params={name: value})
                assert response.status_code == 400, (name, value, response.text)
                assert response.json()["error"]["param"] == name


def test_usage_windows_are_bounded(stack):
    with api(stack) as client:
        too_long = client.get("/v1/usage", params={"start": "2025-01-01", "end": "2025-06-01"})
        assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "start"
        assert "93 days" in too_long.json()["error"]["message"]
        quarter = client.get("/v1/usage", params={"start": "2025-01-01", "end": "2025-04-01"})
        assert quarter.status_code == 200, quarter.text
        assert quarter.json()["total"]["requests"] == 0


def test_a_client_cannot_upload_a_file_as_batch_output(stack):
    with api(stack) as client:
        response = client.post(
            "/v1/files", data={"purpose": "batch_output"}, files={"file": ("out.jsonl", b"{}\n")}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "purpose"
        listed = client.get("/v1/files", params={"purpose": "batch_output"}).json()["data"]
        assert all(f["filename"] != "out.jsonl" for f in listed)


def test_a_form_of_many_small_fields_is_refused(stack):
    fields = {f"field{n}": "x" for n in range(100)}
    with api(stack) as client:
        upload = client.post(
            "/v1/files", data={"purpose": "user_data", **fields}, files={"file": ("a.txt", b"hi")}
        )
        assert upload.status_code == 400 and "fields" in upload.json()["error"]["message"]
        transcription = client.post(
            "/v1/audio/transcriptions",
            data={"model": "cirrus-transcribe", **fields},
            files={"file": ("a.wav", b"RIFF")},
        )
        assert transcription.status_code == 400 and "fields" in transcription.json()["error"]["message"]
        big = {f"field{n}": "x" * 4000 for n in range(20)}
        too_big = client.post("/v1/files", data={"purpose": "user_data", **big}, files={"file": ("a", b"hi")})
        assert too_big.status_code == 413 and "in all" in too_big.json()["error"]["message"]


def test_a_providers_400_reaches_the_client_without_internal_names(stack, provider):
    internal = "Deployment gpt4o-prod-eastus2 rejects 'logit_bias'; ask #llm-platform-oncall."
    script(provider, {"status": 400, "error_message": internal})
    with api(stack) as client:
        response = client.post(
            "/v1/chat/completions",
            json={"model": "cirrus-local", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("The model provider rejected the request as invalid")
    assert "gpt4o" not in message and "oncall" not in message
    host_log_with(stack, internal)  # the operators' copy, under the request's id


def test_a_reply_queue_cannot_be_set_over_http(stack):
    victim = f"e2e-victim-{uuid.uuid4().hex[:8]}"
    key = stack.new_key()
    for secret in (key["key"], stack.master_key):
        with api(stack, secret) as client:
            response = client.post(
                "/v1/jobs",
                json={"type": "agent", "model": "cirrus-local", "input": "hi", "reply_queue": victim},
            )
        assert response.status_code == 400 and response.json()["error"]["param"] == "reply_queue"


def test_a_queued_job_cannot_reply_on_the_gateways_queues_nor_make_a_queue(stack, provider):
    key = stack.new_key()
    usage_queue = stack.env["USAGE_QUEUE"]
    jobs = stack.env.get("JOBS_QUEUE", "cirrus-jobs")
    service = QueueServiceClient.from_connection_string(stack.env["AzureWebJobsStorage"])
    with api(stack, key["key"]) as client:
        for target in (usage_queue, f"{jobs}-poison"):
            job_id = f"job_edge_{uuid.uuid4().hex[:12]}"
            message = {"v": 1, "job_id": job_id, "key_id": key["id"], "reply_queue": target}
            message["job"] = {"type": "agent", "model": "cirrus-local", "input": "hi"}
            send_raw(stack, jobs, json.dumps(message))
            done = wait_for(client, job_id)
            assert done["status"] == "failed" and "reply_queue" in done["error"]["message"]
        script(provider, {"reply": "Hi."})
        missing = f"e2e-missing-{uuid.uuid4().hex[:8]}"
        job_id = f"job_edge_{uuid.uuid4().hex[:12]}"
        message = {"v": 1, "job_id": job_id, "key_id": key["id"], "reply_queue": missing}
        message["job"] = {"type": "agent", "model": "cirrus-local", "input": "hi"}
        send_raw(stack, jobs, json.dumps(message))
        assert wait_for(client, job_id)["status"] == "completed"
        assert "reply.failed" in [e["event"] for e in events(client, job_id)]
    assert missing not in [q.name for q in service.list_queues(name_starts_with=missing)]


def wait_for(client, job_id: str) -> dict:
    """A queue-submitted job, once it exists and has ended."""
    deadline = time.time() + 20
    while client.get(f"/v1/jobs/{job_id}").status_code == 404:
        assert time.time() < deadline
        time.sleep(0.2)
    return wait(client, job_id)


def test_a_key_with_a_budget_cannot_use_a_model_without_a_price(stack):
    key = stack.new_key(max_budget=1)
    with api(stack, key["key"]) as client:
        body = {"model": "cirrus-rerank", "query": "q", "documents": ["a", "b"]}
        refused = client.post("/v1/rerank", json=body)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "model_price_unknown"
        priced = {**body, "model": "cirrus-rerank-priced"}
        assert client.post("/v1/rerank", json=priced).status_code == 200
    unlimited = stack.new_key()
    with api(stack, unlimited["key"]) as client:
        assert client.post("/v1/rerank", json=body).status_code == 200  # no budget to keep


def test_a_keys_models_hold_for_its_fallbacks(stack):
    hello = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    only_broken = stack.new_key(models=["cirrus-broken"])
    with api(stack, only_broken["key"]) as client:
        response = client.post("/v1/chat/completions", json={"model": "cirrus-broken", **hello})
        assert response.status_code == 502, response.text  # cirrus-local is not this key's to use
    both = stack.new_key(models=["cirrus-broken", "cirrus-local"])
    with api(stack, both["key"]) as client:
        response = client.post("/v1/chat/completions", json={"model": "cirrus-broken", **hello})
        assert response.status_code == 200 and response.headers["x-cirrus-model"] == "cirrus-local"


def test_an_early_error_still_reaches_a_client_whose_body_was_not_read(stack):
    # A handler that answers before reading the body (a wrong key): the answer still arrives whole,
    # through the local host's relay and the worker's HTTP server, with 2 MiB left unread.
    body = b"x" * (2 * 1024 * 1024)
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        for _ in range(10):
            response = client.post(
                "/v1/chat/completions",
                content=body,
                headers={"Authorization": "Bearer sk-wrong", "Content-Type": "application/json"},
            )
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
