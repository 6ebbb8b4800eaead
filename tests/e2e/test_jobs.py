"""End to end: agent runs and analysis jobs through the local host, over HTTP and straight on the
jobs queue. The fake provider scripts the model: tool calls, then replies."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.e2e.helpers import api, calc, events, make_queue, receive, script, send_raw, submit, wait

# --- agent runs -----------------------------------------------------------------------------


def test_an_agent_run_calls_a_tool_and_streams_replayable_events(stack, provider):
    script(provider, calc("6*7"), {"reply": "It is 42."})
    with api(stack) as client:
        job = submit(
            client, type="agent", input="What is 6 times 7?", tools=["calculator"], instructions="Use tools."
        )
        assert job["status"] == "queued" and job["id"].startswith("job_")
        done = wait(client, job["id"])
        assert done["status"] == "completed", done
        assert done["result"]["output_text"] == "It is 42."
        assert [s["kind"] for s in done["steps"]] == ["model", "tool", "model"]
        assert done["usage"]["input_tokens"] > 0 and done["progress"]["step"] == 2
        replay = events(client, job["id"])
        kinds = [e["event"] for e in replay]
        assert kinds[0] == "job.started" and kinds[-1] == "job.completed"
        assert "tool.call" in kinds and "usage" in kinds
        result = next(e for e in replay if e["event"] == "tool.result")
        assert result["data"]["output"] == "42" and result["data"]["status"] == "ok"
        assert [e["id"] for e in replay] == list(range(1, len(replay) + 1))
        resumed = events(client, job["id"], last=3)  # a reconnect after event 3
        assert [e["id"] for e in resumed] == [e["id"] for e in replay[3:]]
    sent = provider.get("/_control/requests").json()
    assert sent[-1]["body"]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": sent[-1]["body"]["messages"][-2]["tool_calls"][0]["id"],
        "content": "42",
    }


def test_prompt_injected_requests_to_internal_addresses_are_blocked_and_recorded(stack, provider):
    targets = [
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:7071/v1/keys",
        "http://10.0.0.5/",
        "http://[::1]/",
    ]
    script(
        provider,
        {"tool_calls": [{"name": "http_get", "arguments": {"url": url}} for url in targets]},
        {"reply": "I could not fetch those."},
    )
    with api(stack) as client:
        job = submit(client, type="agent", input="Summarise http://169.254.169.254/", tools=["http_get"])
        done = wait(client, job["id"])
        assert done["status"] == "completed"
        blocked = [e["data"] for e in events(client, job["id"]) if e["event"] == "tool.blocked"]
    assert len(blocked) == len(targets)
    reasons = " ".join(b["reason"] for b in blocked)
    assert "link-local" in reasons or "169.254" in reasons
    assert "localhost" in reasons and "private" in reasons and "loopback" in reasons


def test_a_run_rides_over_a_provider_429_and_a_5xx(stack, provider):
    """The e2e model file has no router retries, so the job's own retry policy must wait out the
    429's Retry-After and try the 500 again."""
    script(provider, {"fault": "429", "retry_after": 1}, {"fault": "500"}, {"reply": "Got there."})
    with api(stack) as client:
        done = wait(client, submit(client, type="agent", input="persist")["id"])
    assert done["status"] == "completed", done
    assert done["result"]["output_text"] == "Got there." and done["progress"]["step"] == 1
    assert len(provider.get("/_control/requests").json()) == 3  # asked three times


def test_step_cap_and_refused_submissions(stack, provider):
    script(provider, *[calc("1+1")] * 3)
    with api(stack) as client:
        capped = wait(
            client, submit(client, type="agent", input="loop", tools=["calculator"], max_steps=2)["id"]
        )
        assert capped["status"] == "incomplete" and capped["incomplete_details"] == {"reason": "max_steps"}
        assert capped["progress"]["step"] == 2
        response = client.post(
            "/v1/jobs", json={"type": "agent", "model": "cirrus-local", "input": "x", "tools": ["shell"]}
        )
        assert response.status_code == 400 and response.json()["error"]["param"] == "tools"
        response = client.post("/v1/jobs", json={"type": "agent", "model": "cirrus-local"})
        assert response.status_code == 400
        bad_messages = {"type": "agent", "model": "cirrus-local", "input": [{"role": "user"}]}
        response = client.post("/v1/jobs", json=bad_messages)  # accepted with 202, then poisoned, before
        assert response.status_code == 400, response.text
        assert response.json()["error"] == {
            "message": "Invalid value for 'input[0]': a `user` message needs `content`",
            "type": "invalid_request_error",
            "param": "input[0]",
            "code": None,
        }


def test_the_cost_cap_stops_a_run_with_its_partial_result(stack, provider):
    script(
        provider,
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1"}}]},
        calc("2"),
        calc("3"),
    )
    with api(stack) as client:
        job = submit(
            client,
            type="agent",
            model="cirrus-priced",
            input="count " * 50,
            tools=["calculator"],
            max_cost_usd=0.0001,
        )
        done = wait(client, job["id"])
    assert done["status"] == "incomplete" and done["incomplete_details"] == {"reason": "max_cost"}
    assert done["usage"]["cost_usd"] >= 0.0001 and done["progress"]["step"] < 3


def test_a_run_past_its_timeout_stops_as_incomplete(stack, provider):
    script(provider, *[calc("1+1", latency_ms=400)] * 10)  # a queued script's latency, not the profile's
    with api(stack) as client:
        job = submit(client, type="agent", input="loop", tools=["calculator"], timeout_s=1)
        done = wait(client, job["id"])
    assert done["status"] == "incomplete" and done["incomplete_details"] == {"reason": "timeout"}


def test_a_webhook_to_an_internal_address_is_refused_and_recorded(stack, provider):
    script(provider, {"reply": "done"})
    with api(stack) as client:
        job = submit(client, type="agent", input="hi", webhook_url="http://127.0.0.1:9/hook")
        assert job["webhook_secret"].startswith("whsec_")
        assert wait(client, job["id"])["status"] == "completed"
        deadline = time.time() + 10
        while not any(e["event"] == "webhook.blocked" for e in events(client, job["id"])):
            assert time.time() < deadline, "the refusal was not recorded"
            time.sleep(0.2)


def test_cancel_stops_a_running_job(stack, provider):
    script(provider, *[calc("1+1", latency_ms=300)] * 30)
    with api(stack) as client:
        job = submit(client, type="agent", input="loop", tools=["calculator"], max_steps=30)
        deadline = time.time() + 20
        while client.get(f"/v1/jobs/{job['id']}").json()["progress"]["step"] < 1:
            assert time.time() < deadline
            time.sleep(0.1)
        assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] in ("cancelling", "cancelled")
        done = wait(client, job["id"])
        assert done["status"] == "cancelled" and done["progress"]["step"] < 30
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
        assert events(client, job["id"])[-1]["event"] == "job.cancelled"


def test_revoking_a_key_stops_its_running_job_within_seconds(stack, provider):
    key = stack.new_key()
    script(provider, *[calc("1+1", latency_ms=300)] * 40)
    with api(stack, key["key"]) as client, stack.admin() as admin:
        job = submit(client, type="agent", input="loop", tools=["calculator"], max_steps=40)
        deadline = time.time() + 20
        while client.get(f"/v1/jobs/{job['id']}").json()["progress"]["step"] < 1:
            assert time.time() < deadline
            time.sleep(0.1)
        assert admin.delete(f"/v1/keys/{key['id']}").status_code == 200
        done = wait(admin, job["id"], timeout=30)
    assert done["status"] == "failed" and done["error"]["code"] == "invalid_api_key", done
    assert done["progress"]["step"] < 40


def test_jobs_belong_to_their_key(stack, provider):
    alice, bob = stack.new_key()["key"], stack.new_key()["key"]
    script(provider, {"reply": "done"})
    with api(stack, alice) as mine, api(stack, bob) as theirs:
        job = submit(mine, type="agent", input="hi")
        for response in (
            theirs.get(f"/v1/jobs/{job['id']}"),
            theirs.get(f"/v1/jobs/{job['id']}/events"),
            theirs.post(f"/v1/jobs/{job['id']}/cancel"),
        ):
            assert response.status_code == 404 and "hi" not in response.text
        assert job["id"] not in [j["id"] for j in theirs.get("/v1/jobs").json()["data"]]
        assert job["id"] in [j["id"] for j in mine.get("/v1/jobs").json()["data"]]
        assert wait(mine, job["id"])["status"] == "completed"


# --- analysis jobs --------------------------------------------------------------------------

ANALYSES = [
    (
        "analyze_data",
        {
            "data": {"revenue": [10, 12, 13, 15, 40], "costs": [8, 8, 9, 9, 10]},
            "question": "How are we doing?",
        },
        {
            "summary": "Revenue grows.",
            "trends": ["up"],
            "anomalies": ["a spike at the end"],
            "recommendations": ["check"],
        },
    ),
    (
        "make_decision",
        {"situation": "Pick a cloud", "options": ["Azure", "Other"], "constraints": {"budget": "low"}},
        {
            "chosen_option": "Azure",
            "rationale": "fits",
            "scores": [{"option": "Azure", "score": 9}, {"option": "Other", "score": 4}],
            "confidence": 0.8,
        },
    ),
    (
        "generate_content",
        {"content_type": "email", "context": "Launch of Cirrus", "variants": 2},
        {"content": "Hello", "variants": ["Hi", "Hey"]},
    ),
    (
        "process_task",
        {"task": "Renew the TLS certificate before Friday"},
        {
            "category": "operations",
            "priority": "high",
            "actions": [{"action": "renew", "owner": None, "due": None}],
        },
    ),
    (
        "summarize_events",
        {
            "events": [
                {
                    "tool_name": "Bash",
                    "session_id": "s1",
                    "timestamp": "2026-11-20T10:00:00Z",
                    "hook_event_name": "PreToolUse",
                },
                {
                    "tool_name": "Bash",
                    "session_id": "s1",
                    "timestamp": "2026-11-20T10:00:02Z",
                    "hook_event_name": "PostToolUse",
                    "error": "exit 1",
                },
                {
                    "tool_name": "Read",
                    "session_id": "s2",
                    "timestamp": "2026-11-20T11:00:00Z",
                    "hook_event_name": "PreToolUse",
                },
            ]
        },
        {
            "summary": "Two sessions.",
            "sessions": [{"session": "s1", "summary": "bash failed"}, {"session": "s2", "summary": "read"}],
            "tools": [{"tool": "Bash", "summary": "1 error"}],
            "errors": ["exit 1"],
            "notable_actions": [],
        },
    ),
]


@pytest.mark.parametrize(("task", "data", "answer"), ANALYSES, ids=[a[0] for a in ANALYSES])
def test_each_analysis_task_end_to_end(stack, provider, task, data, answer):
    script(provider, {"reply": json.dumps(answer)})
    with api(stack) as client:
        done = wait(client, submit(client, type="analysis", task=task, input=data)["id"])
    assert done["status"] == "completed", done
    result = done["result"]
    assert result["summary" if "summary" in answer else next(iter(answer))] is not None
    if task == "analyze_data":
        assert result["statistics"]["series"]["revenue"]["max"] == 40  # computed in code, not by the model
    if task == "make_decision":
        assert result["chosen_option"] == "Azure" and result["scores"] == {"Azure": 9, "Other": 4}
    if task == "summarize_events":
        assert result["statistics"]


def test_an_invalid_answer_gets_one_repair_then_fails_keeping_the_raw_output(stack, provider):
    good = {"category": "ops", "priority": "low", "actions": [{"action": "a", "owner": None, "due": None}]}
    with api(stack) as client:
        script(provider, {"reply": "not json"}, {"reply": json.dumps(good)})
        repaired = wait(
            client, submit(client, type="analysis", task="process_task", input={"task": "x"})["id"]
        )
        assert repaired["status"] == "completed" and repaired["progress"]["step"] == 2
        script(provider, {"reply": "still not json"}, {"reply": '{"priority": "whenever"}'})
        failed = wait(client, submit(client, type="analysis", task="process_task", input={"task": "x"})["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_model_output"
    assert failed["error"]["raw_output"] == '{"priority": "whenever"}'


def test_analysis_input_is_checked_on_submit(stack):
    with api(stack) as client:
        response = client.post(
            "/v1/jobs",
            json={
                "type": "analysis",
                "task": "make_decision",
                "model": "cirrus-local",
                "input": {"options": ["a"]},
            },
        )
    assert response.status_code == 400 and response.json()["error"]["param"].startswith("input")


# --- queue-submitted jobs -------------------------------------------------------------------


def test_a_job_put_straight_on_the_queue_runs_once_and_replies(stack, provider):
    key = stack.new_key()
    job_id = f"job_ext_{uuid.uuid4().hex[:12]}"
    reply_queue = f"e2e-replies-{uuid.uuid4().hex[:8]}"
    message = {
        "v": 1,
        "job_id": job_id,
        "key_id": key["id"],
        "job": {"type": "agent", "model": "cirrus-local", "input": "hello from a Logic App"},
        "reply_queue": reply_queue,
    }
    script(provider, {"reply": "Hello, Logic App."})
    make_queue(stack, reply_queue)  # the submitter's own queue: Cirrus never creates one
    send_raw(stack, stack.env.get("JOBS_QUEUE", "cirrus-jobs"), json.dumps(message))
    with api(stack, key["key"]) as client:
        deadline = time.time() + 20
        while client.get(f"/v1/jobs/{job_id}").status_code == 404:
            assert time.time() < deadline
            time.sleep(0.2)
        done = wait(client, job_id)
        assert done["status"] == "completed" and done["source"] == "queue"
        assert done["result"]["output_text"] == "Hello, Logic App."
        reply = receive(stack, reply_queue)
        assert reply["job_id"] == job_id and reply["status"] == "completed"
        seen = len(events(client, job_id))
        send_raw(stack, "cirrus-jobs", json.dumps(message))  # the same message again
        time.sleep(3)
        assert len(events(client, job_id)) == seen  # ran once
        assert client.get("/v1/usage").json()["total"]["requests"] == 1  # charged to the key it named


def test_a_queued_job_with_an_unknown_key_fails_with_a_record(stack):
    job_id = f"job_ext_{uuid.uuid4().hex[:12]}"
    message = {
        "v": 1,
        "job_id": job_id,
        "key_id": "key_0000000000000000",
        "job": {"type": "agent", "model": "cirrus-local", "input": "x"},
    }
    send_raw(stack, "cirrus-jobs", json.dumps(message))
    with api(stack) as client:
        deadline = time.time() + 20
        while client.get(f"/v1/jobs/{job_id}").status_code == 404:
            assert time.time() < deadline
            time.sleep(0.2)
        job = wait(client, job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "invalid_api_key"


def test_a_queued_job_that_can_never_run_fails_at_once_with_a_record(stack):
    job_id = f"job_bad_{uuid.uuid4().hex[:12]}"
    send_raw(
        stack,
        "cirrus-jobs",
        json.dumps({"v": 1, "job_id": job_id, "key_id": "key_x", "job": {"type": "nope"}}),
    )
    with api(stack) as client:
        deadline = time.time() + 30
        while (response := client.get(f"/v1/jobs/{job_id}")).status_code == 404:
            assert time.time() < deadline, "no error record"
            time.sleep(0.3)
        record = response.json()
    assert record["status"] == "failed" and record["error"]["code"] == "invalid_request_error"
    assert record["error"]["param"] == "job.type" and "'job.type'" in record["error"]["message"]


def test_a_malformed_queue_message_lands_in_poison_with_an_error_record(stack):
    job_id = f"job_bad_{uuid.uuid4().hex[:12]}"
    job = {"type": "agent", "model": "cirrus-local", "input": "x"}
    send_raw(stack, "cirrus-jobs", json.dumps({"v": 1, "job_id": job_id, "job": job}))  # whose is it?
    with api(stack) as client:
        deadline = time.time() + 30
        while (response := client.get(f"/v1/jobs/{job_id}")).status_code == 404:
            assert time.time() < deadline, "no error record"
            time.sleep(0.3)
        record = response.json()
    assert record["status"] == "failed" and record["error"]["code"] == "message_failed"
    assert "key_id" in record["error"]["message"]
