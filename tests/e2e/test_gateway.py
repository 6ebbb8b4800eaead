"""End to end through the official SDK: embeddings, completions, sessions, usage, fallbacks, cache."""

import base64
import json
import time
import uuid

import httpx
import pytest
from azure.storage.queue import QueueClient

from tests.openapi import assert_matches


def auth(stack):
    return {"Authorization": f"Bearer {stack.master_key}"}


def eventually(check, timeout=20.0):
    """Poll `check` until it returns a truthy value (background writes land after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_embeddings_with_the_sdk(stack):
    client = stack.client()
    # The SDK asks for base64 and decodes it itself, so this exercises Cirrus's base64 encoding.
    result = client.embeddings.create(model="cirrus-embed", input=["first text", "second text"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 8 and all(isinstance(v, float) for v in result.data[0].embedding)
    floats = client.embeddings.create(model="cirrus-embed", input="first text", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, rel=1e-6)
    raw = httpx.post(
        f"{stack.base_url}/v1/embeddings", headers=auth(stack), json={"model": "cirrus-embed", "input": "x"}
    ).json()
    assert_matches("CreateEmbeddingResponse", raw)


def test_legacy_completions_with_the_sdk(stack):
    client = stack.client()
    completion = client.completions.create(model="cirrus-local", prompt="Say this is a test", max_tokens=7)
    assert completion.object == "text_completion" and completion.choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="cirrus-local", prompt="Say this is a test", max_tokens=7, stream=True
        )
        if c.choices
    )
    assert streamed == completion.choices[0].text


def test_chat_with_a_session_across_three_turns(stack, provider):
    created = httpx.post(
        f"{stack.base_url}/v1/sessions",
        headers=auth(stack),
        json={"title": "e2e", "messages": [{"role": "system", "content": "Be brief."}]},
    )
    assert created.status_code == 201
    session_id = created.json()["id"]
    client = stack.client()
    answers = []
    for turn, question in enumerate(["What is Azure?", "And Functions?", "Summarise."]):
        provider.post(
            "/_control/enqueue", json={"behaviour": {"reply": f"Answer {turn}."}}
        ).raise_for_status()
        kwargs = {"stream": True} if turn == 1 else {}
        reply = client.chat.completions.with_raw_response.create(
            model="cirrus-local",
            messages=[{"role": "user", "content": question}],
            extra_headers={"X-Session-Id": session_id},
            **kwargs,
        )
        assert reply.headers["x-cirrus-session"] == session_id
        parsed = reply.parse()
        text = (
            "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
            if turn == 1
            else parsed.choices[0].message.content
        )
        answers.append(text)
        # Read your writes: the turn is stored before the response (or the stream's end) returns.
        session = httpx.get(f"{stack.base_url}/v1/sessions/{session_id}", headers=auth(stack)).json()
        assert session["message_count"] == 3 + 2 * turn
        assert session["messages"][-1] == {"role": "assistant", "content": f"Answer {turn}."}
    assert answers == ["Answer 0.", "Answer 1.", "Answer 2."]
    third = provider.get("/_control/requests").json()[-1]["body"]["messages"]
    assert [m["content"] for m in third] == [
        "Be brief.",
        "What is Azure?",
        "Answer 0.",
        "And Functions?",
        "Answer 1.",
        "Summarise.",
    ]

    listed = httpx.get(f"{stack.base_url}/v1/sessions?limit=100", headers=auth(stack)).json()
    assert session_id in [s["id"] for s in listed["data"]]
    assert httpx.delete(f"{stack.base_url}/v1/sessions/{session_id}", headers=auth(stack)).status_code == 200
    assert httpx.get(f"{stack.base_url}/v1/sessions/{session_id}", headers=auth(stack)).status_code == 404


def test_unknown_session_is_a_404(stack):
    response = httpx.post(
        f"{stack.base_url}/v1/chat/completions",
        headers={**auth(stack), "X-Session-Id": "sess_nope"},
        json={"model": "cirrus-local", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 404 and response.json()["error"]["param"] == "session_id"


def test_a_fallback_is_visible_in_headers(stack):
    reply = stack.client().chat.completions.with_raw_response.create(
        model="cirrus-broken", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.headers["x-cirrus-fallback"] == "true"
    assert reply.headers["x-cirrus-model"] == "cirrus-local"
    assert reply.headers["x-cirrus-deployment"] == "local-fake-1"
    assert reply.parse().model == "cirrus-local"


def test_exact_match_cache_hit_miss_and_bypass(stack, provider):
    client = stack.client()
    question = [{"role": "user", "content": f"cache me {uuid.uuid4().hex}"}]
    first = client.chat.completions.with_raw_response.create(model="cirrus-cached", messages=question)
    assert first.headers["x-cirrus-cache"] == "miss"

    def hit():
        reply = client.chat.completions.with_raw_response.create(model="cirrus-cached", messages=question)
        return reply if reply.headers["x-cirrus-cache"] == "hit" else None

    second = eventually(hit)
    assert second and second.parse().choices[0].message.content == first.parse().choices[0].message.content
    upstream_calls = len(provider.get("/_control/requests").json())
    stream = client.chat.completions.create(model="cirrus-cached", messages=question, stream=True)
    assert (
        "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        == first.parse().choices[0].message.content
    )
    bypass = client.chat.completions.with_raw_response.create(
        model="cirrus-cached", messages=question, extra_headers={"Cache-Control": "no-cache"}
    )
    assert bypass.headers["x-cirrus-cache"] == "bypass"
    assert (
        len(provider.get("/_control/requests").json()) == upstream_calls + 1
    )  # only the bypass went upstream


def test_usage_is_recorded_and_summarised(stack):
    model_calls = {"cirrus-local": 2, "cirrus-embed": 1}
    start = time.time() - 1
    client = stack.client()
    for _ in range(model_calls["cirrus-local"]):
        client.chat.completions.create(
            model="cirrus-local", messages=[{"role": "user", "content": "count me"}]
        )
    client.embeddings.create(model="cirrus-embed", input="count me")

    def summary():
        body = httpx.get(
            f"{stack.base_url}/v1/usage", headers=auth(stack), params={"start": start, "group_by": "model"}
        ).json()
        groups = {g["group"]: g for g in body["data"]}
        done = all(groups.get(m, {}).get("requests", 0) >= n for m, n in model_calls.items())
        return groups if done else None

    groups = eventually(summary)
    assert groups, "usage records did not arrive"
    assert groups["cirrus-local"]["total_tokens"] > 0
    assert groups["cirrus-local"]["cost_usd"] > 0  # priced as gpt-4o-mini


def test_a_parked_usage_record_is_written_by_the_queue_function(stack, emulators):
    record_id = f"usage_parked_{uuid.uuid4().hex}"
    now = time.time()
    record = {
        "id": record_id,
        "pk": "parked-key",
        "request_id": "req_parked",
        "created_at": now,
        "day": time.strftime("%Y-%m-%d", time.gmtime(now)),
        "key_id": "parked-key",
        "endpoint": "chat.completions",
        "model": "parked-model",
        "input_tokens": 3,
        "output_tokens": 4,
        "total_tokens": 7,
        "cost_usd": 0.5,
        "latency_ms": 1.0,
    }
    queue = QueueClient.from_connection_string(emulators.storage_connection_string, "e2e-usage")
    item = {"id": "ignored", "pk": "parked-key", "records": [record]}
    queue.send_message(base64.b64encode(json.dumps({"usage_item": item}).encode()).decode())

    def landed():
        body = httpx.get(
            f"{stack.base_url}/v1/usage", headers=auth(stack), params={"start": now - 5, "group_by": "model"}
        ).json()
        return [g for g in body["data"] if g["group"] == "parked-model"]

    (group,) = eventually(landed)
    assert group["total_tokens"] == 7 and group["cost_usd"] == 0.5


@pytest.mark.parametrize(
    ("params", "param"), [({"group_by": "colour"}, "group_by"), ({"start": "yesterday"}, "start")]
)
def test_usage_rejects_bad_queries(stack, params, param):
    response = httpx.get(f"{stack.base_url}/v1/usage", headers=auth(stack), params=params)
    assert response.status_code == 400 and response.json()["error"]["param"] == param
