"""End to end: Responses passed through to a deployment that serves `/v1/responses` itself.

`cirrus-responses` in the e2e model file lists `/v1/responses` in `model_info.supported_endpoints`;
the fake provider's log shows where each request went and what it held. Cirrus keeps the state:
the provider gets `store: false` and the whole conversation, never `previous_response_id` (the
fake provider refuses it), while the client sees Cirrus's ids and can read back, list and continue
the response as for any model. Bodies and events are checked against OpenAI's spec.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.helpers import WEATHER_FUNCTION, provider_requests, read_events, script, sdk_body
from tests.openapi import assert_matches

NATIVE = "cirrus-responses"
TRANSLATED = "cirrus-local"


def upstream(provider: httpx.Client) -> list[dict[str, Any]]:
    """(path, body) of every request the fake provider got, oldest first."""
    return [{"path": r["path"], "body": r["body"]} for r in provider_requests(provider)]


def test_a_flagged_model_is_passed_through_to_responses(stack, provider):
    client = stack.client()
    raw = client.responses.with_raw_response.create(
        model=NATIVE,
        input="Say hello",
        instructions="Be brief.",
        metadata={"team": "e2e"},
        max_output_tokens=64,
    )
    created = raw.parse()
    assert raw.headers["x-cirrus-deployment"] == "responses-fake-1"
    assert raw.headers["x-cirrus-model"] == NATIVE
    assert_matches("Response", sdk_body(created))
    assert created.model == NATIVE and created.status == "completed"
    assert created.output_text.startswith("Fake reply to: Say hello")
    assert created.metadata == {"team": "e2e"} and created.store is True
    assert created.usage.input_tokens > 0 and created.usage.output_tokens > 0

    ((sent,),) = [upstream(provider)]
    assert sent["path"] == "/v1/responses"
    assert sent["body"] == {
        "model": "gpt-4o-mini",
        "input": "Say hello",
        "instructions": "Be brief.",
        "max_output_tokens": 64,
        "store": False,  # Cirrus keeps the state, not the provider
        "truncation": "auto",
    }

    fetched = client.responses.retrieve(created.id)  # Cirrus's id, from Cirrus's store
    assert fetched.output_text == created.output_text and fetched.model == NATIVE
    assert_matches("Response", sdk_body(fetched))
    items = client.responses.input_items.list(created.id)
    assert [item.content[0].text for item in items.data] == ["Say hello"]


def test_an_unflagged_model_still_goes_to_chat_completions(stack, provider):
    created = stack.client().responses.create(model=TRANSLATED, input="Say hello")
    assert created.status == "completed"
    assert [r["path"] for r in upstream(provider)] == ["/v1/chat/completions"]


def test_a_conversation_continues_from_cirrus_store(stack, provider):
    client = stack.client()
    first = client.responses.create(model=NATIVE, input="My name is Ada.")
    second = client.responses.create(model=NATIVE, input="What is my name?", previous_response_id=first.id)
    third = client.responses.create(model=NATIVE, input="Spell it.", previous_response_id=second.id)
    assert third.previous_response_id == second.id and third.status == "completed"
    sent = [r["body"] for r in upstream(provider)]
    assert all("previous_response_id" not in b and b["store"] is False for b in sent)
    turns = sent[2]["input"]
    texts = [_text(item) for item in turns]
    assert texts == [
        "My name is Ada.",
        first.output_text,
        "What is my name?",
        second.output_text,
        "Spell it.",
    ]
    assert not any("id" in item for item in turns[:-1])  # the provider has none of them stored
    items = client.responses.input_items.list(third.id, order="asc")
    assert [_text(sdk_body(item)) for item in items.data] == texts


def test_a_stream_is_relayed_and_stored(stack, provider):
    script(provider, {"reply": "one two three four", "tokens_per_chunk": 1})
    with httpx.stream(
        "POST",
        f"{stack.base_url}/v1/responses",
        headers={"Authorization": f"Bearer {stack.master_key}"},
        json={"model": NATIVE, "input": "Count to four", "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-cirrus-deployment"] == "responses-fake-1"
        events = [data for _, data in read_events(response)]
    for event in events:
        assert_matches("ResponseStreamEvent", event)
    numbers = [e["sequence_number"] for e in events]
    assert numbers == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "one two three four" and len(deltas) == 4
    final = events[-1]["response"]
    assert final["model"] == NATIVE and final["usage"]["output_tokens"] == 4
    assert {e["response"]["id"] for e in events if "response" in e} == {final["id"]}
    ((sent,),) = [upstream(provider)]
    assert sent["path"] == "/v1/responses" and sent["body"]["stream"] is True

    fetched = stack.client().responses.retrieve(final["id"])
    assert fetched.output_text == "one two three four" and fetched.status == "completed"


def test_the_sdk_streams_a_passed_through_response(stack, provider):
    client = stack.client()
    with client.responses.stream(model=NATIVE, input="Hello there") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text and final.model == NATIVE


def test_a_function_tool_round_trip(stack, provider):
    client = stack.client()
    script(provider, {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]})
    asked = client.responses.create(model=NATIVE, input="Weather in Oslo?", tools=[WEATHER_FUNCTION])
    (call,) = [item for item in asked.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.arguments == '{"city": "Oslo"}'
    answered = client.responses.create(
        model=NATIVE,
        previous_response_id=asked.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "12 C, rain"}],
        tools=[WEATHER_FUNCTION],
    )
    assert answered.status == "completed" and answered.output_text
    sent = upstream(provider)[-1]["body"]
    kinds = [item.get("type", "message") for item in sent["input"]]
    assert kinds == ["message", "function_call", "function_call_output"]
    assert sent["input"][1]["call_id"] == call.call_id and sent["tools"][0]["name"] == "get_weather"


def test_store_false_is_not_kept(stack, provider):
    client = stack.client()
    created = client.responses.create(model=NATIVE, input="hi", store=False)
    assert created.store is False and created.status == "completed"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_a_provider_failure_mid_stream_ends_in_band(stack, provider):
    script(provider, {"fault": "cut", "cut_after": 4})
    with httpx.stream(
        "POST",
        f"{stack.base_url}/v1/responses",
        headers={"Authorization": f"Bearer {stack.master_key}"},
        json={"model": NATIVE, "input": "hi", "stream": True},
        timeout=30,
    ) as response:
        events = [data for _, data in read_events(response)]
    for event in events:
        assert_matches("ResponseStreamEvent", event)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    failed = stack.client().responses.retrieve(events[-1]["response"]["id"])
    assert failed.status == "failed"


def test_usage_is_recorded_under_the_key(stack, provider):
    key = stack.new_key(models=[NATIVE])["key"]
    client = stack.client(key=key)
    start = time.time() - 1
    client.responses.create(model=NATIVE, input="count me")
    with client.responses.stream(model=NATIVE, input="me too") as stream:
        stream.until_done()
    with pytest.raises(openai.PermissionDeniedError):
        client.responses.create(model=TRANSLATED, input="not mine")
    deadline = time.time() + 20
    while True:
        usage = httpx.get(
            f"{stack.base_url}/v1/usage",
            headers={"Authorization": f"Bearer {key}"},
            params={"start": start, "group_by": "model"},
        ).json()
        groups = {g["group"]: g for g in usage["data"]}
        if groups.get(NATIVE, {}).get("requests", 0) >= 2 or time.time() > deadline:
            break
        time.sleep(0.3)
    assert groups[NATIVE]["requests"] == 2 and groups[NATIVE]["total_tokens"] > 0
    assert groups[NATIVE]["cost_usd"] > 0  # priced as gpt-4o-mini by LiteLLM's map


def _text(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content or ())
