"""End to end: the Responses API with the official openai SDK against the local host.

Every body and event is checked against OpenAI's spec (`Response`, `ResponseStreamEvent`,
`ResponseItemList`, `ErrorResponse`). Background runs go over the stack's jobs queue; the killed
worker runs on a host of its own, as in test_job_workers.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.helpers import (
    WEATHER_FUNCTION,
    api,
    provider_requests,
    read_events,
    script,
    sdk_body,
    wait_response,
)
from tests.openapi import assert_matches

MODEL = "cirrus-local"


def sent_to_provider(provider: httpx.Client) -> list[dict[str, Any]]:
    return [r["body"] for r in provider_requests(provider)]


def assert_stream_valid(events: list[dict[str, Any]]) -> None:
    """Each event matches the spec, and the sequence numbers count up by one."""
    for event in events:
        assert_matches("ResponseStreamEvent", event)
    numbers = [e["sequence_number"] for e in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers


# --- create, retrieve, delete ----------------------------------------------------------------------


def test_create_retrieve_and_delete(stack, provider):
    client = stack.client()
    created = client.responses.create(
        model=MODEL,
        input="Say hello",
        instructions="Be brief.",
        temperature=0.3,
        max_output_tokens=64,
        metadata={"team": "e2e"},
        user="e2e-user",
    )
    assert created.object == "response" and created.id.startswith("resp")
    assert created.status == "completed"
    assert created.output_text
    assert created.usage.input_tokens > 0 and created.usage.output_tokens > 0
    assert created.metadata == {"team": "e2e"}
    assert_matches("Response", sdk_body(created))
    (sent,) = sent_to_provider(provider)
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["temperature"] == 0.3 and sent["max_completion_tokens"] == 64 and sent["user"] == "e2e-user"

    fetched = client.responses.retrieve(created.id)
    assert fetched.output_text == created.output_text and fetched.status == "completed"
    assert_matches("Response", sdk_body(fetched))

    deleted = client.responses.delete(created.id)
    assert deleted is None  # the SDK returns nothing; the body is checked below over raw HTTP
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.retrieve(created.id)
    assert_matches("ErrorResponse", {"error": missing.value.body})


def test_delete_answers_a_deleted_object(stack, provider):
    created = stack.client().responses.create(model=MODEL, input="hi")
    with api(stack) as http:
        answer = http.delete(f"/v1/responses/{created.id}")
        assert answer.status_code == 200
        assert answer.json() == {"id": created.id, "object": "response", "deleted": True}
        again = http.delete(f"/v1/responses/{created.id}")
        assert again.status_code == 404
        assert_matches("ErrorResponse", again.json())


def test_store_false_is_not_kept(stack, provider):
    client = stack.client()
    created = client.responses.create(model=MODEL, input="hi", store=False)
    assert created.status == "completed" and created.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


# --- streaming -------------------------------------------------------------------------------------


def test_stream_emits_the_typed_event_sequence(stack, provider):
    script(provider, {"reply": "one two three four", "tokens_per_chunk": 1})
    client = stack.client()
    with client.responses.create(model=MODEL, input="Count to four", stream=True) as stream:
        events = [sdk_body(event) for event in stream]
    final = client.responses.retrieve(events[-1]["response"]["id"])
    assert_stream_valid(events)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert kinds.count("response.output_text.delta") == 4
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["sequence_number"] == 0
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "one two three four" == final.output_text
    assert final.usage.total_tokens > 0
    assert events[-1]["response"]["output"] == sdk_body(final)["output"]  # stored as it was streamed
    (sent,) = sent_to_provider(provider)
    assert sent["stream"] is True


def test_stream_over_raw_sse_names_each_event(stack, provider):
    with httpx.stream(
        "POST",
        f"{stack.base_url}/v1/responses",
        headers={"Authorization": f"Bearer {stack.master_key}"},
        json={"model": MODEL, "input": "hi", "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response)
    assert all(name == data["type"] for name, data in events)  # `event:` agrees with the data
    assert_stream_valid([data for _, data in events])
    assert events[-1][0] == "response.completed"


def test_a_provider_failure_mid_stream_is_an_error_event_then_failed(stack, provider):
    script(provider, {"fault": "cut", "cut_after": 2, "reply": "one two three four five"})
    with httpx.stream(
        "POST",
        f"{stack.base_url}/v1/responses",
        headers={"Authorization": f"Bearer {stack.master_key}"},
        json={"model": MODEL, "input": "hi", "stream": True},
        timeout=30,
    ) as response:
        events = [data for _, data in read_events(response)]
    assert_stream_valid(events)
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["status"] == "failed"


# --- conversations: previous_response_id and input items ------------------------------------------


def test_previous_response_id_chains_three_turns(stack, provider):
    client = stack.client()
    script(provider, {"reply": "Hello Ada."}, {"reply": "Blue it is."}, {"reply": "Ada likes blue."})
    first = client.responses.create(model=MODEL, input="My name is Ada.", instructions="Be kind.")
    second = client.responses.create(model=MODEL, input="I like blue.", previous_response_id=first.id)
    third = client.responses.create(
        model=MODEL, input="What do you know about me?", previous_response_id=second.id
    )
    assert third.previous_response_id == second.id and third.output_text == "Ada likes blue."
    assert_matches("Response", sdk_body(third))
    last = sent_to_provider(provider)[-1]["messages"]
    assert last == [
        # `instructions` are the current request's only: the first turn's are not carried on.
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "I like blue."},
        {"role": "assistant", "content": "Blue it is."},
        {"role": "user", "content": "What do you know about me?"},
    ]


def test_previous_response_id_of_another_key_is_not_found(stack, provider):
    mine = stack.client().responses.create(model=MODEL, input="secret")
    other = stack.client(stack.new_key()["key"])
    with pytest.raises(openai.BadRequestError) as refused:
        other.responses.create(model=MODEL, input="continue", previous_response_id=mine.id)
    assert refused.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)


def test_input_items_are_paginated(stack, provider):
    client = stack.client()
    first = client.responses.create(model=MODEL, input="one")
    second = client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "two"},
            {"role": "user", "content": [{"type": "input_text", "text": "three"}]},
        ],
        previous_response_id=first.id,
    )
    page = client.responses.input_items.list(second.id, limit=2, order="asc")
    assert_matches("ResponseItemList", sdk_body(page))
    assert page.has_more is True and len(page.data) == 2
    everything = list(client.responses.input_items.list(second.id, limit=2, order="asc"))  # auto-paging
    texts = [
        part.text for item in everything for part in item.content if getattr(part, "text", None) is not None
    ]
    assert texts == ["one", first.output_text, "two", "three"]
    newest_first = client.responses.input_items.list(second.id)
    assert [item.id for item in newest_first.data] == [item.id for item in reversed(everything)]
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.input_items.list(second.id, after="nope")
    assert bad.value.body["param"] == "after"


# --- tools and structured output -------------------------------------------------------------------


def test_function_tool_round_trip(stack, provider):
    client = stack.client()
    script(
        provider,
        {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"reply": "It is sunny in Paris."},
    )
    asked = client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER_FUNCTION])
    assert_matches("Response", sdk_body(asked))
    (call,) = [item for item in asked.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    answered = client.responses.create(
        model=MODEL,
        previous_response_id=asked.id,
        tools=[WEATHER_FUNCTION],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "sunny"}'}],
    )
    assert answered.output_text == "It is sunny in Paris."
    first, second = sent_to_provider(provider)
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": WEATHER_FUNCTION["description"],
                "parameters": WEATHER_FUNCTION["parameters"],
            },
        }
    ]
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"][0]["id"] == call.call_id
    assert assistant["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": call.arguments}
    assert tool == {"role": "tool", "tool_call_id": call.call_id, "content": '{"sky": "sunny"}'}


def test_a_streamed_tool_call_has_argument_events(stack, provider):
    script(provider, {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]})
    client = stack.client()
    with client.responses.create(
        model=MODEL, input="Weather?", tools=[WEATHER_FUNCTION], stream=True
    ) as stream:
        events = [sdk_body(event) for event in stream]
    final = client.responses.retrieve(events[-1]["response"]["id"])
    assert_stream_valid(events)
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert json.loads(done["arguments"]) == {"city": "Oslo"}
    assert final.output[0].type == "function_call" and final.output[0].name == "get_weather"


def test_tools_on_a_model_without_tool_calling_are_a_400(stack, provider):
    with pytest.raises(openai.BadRequestError) as refused:
        stack.client().responses.create(model="cirrus-no-tools", input="Weather?", tools=[WEATHER_FUNCTION])
    error = refused.value.body
    assert error["param"] == "tools" and "does not support tools" in error["message"]
    assert_matches("ErrorResponse", {"error": error})
    assert sent_to_provider(provider) == []  # refused before any model call
    # Without tools the same model answers.
    assert stack.client().responses.create(model="cirrus-no-tools", input="hi").status == "completed"


def test_json_schema_output(stack, provider):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    created = stack.client().responses.create(
        model=MODEL,
        input="A city, please.",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )
    assert_matches("Response", sdk_body(created))
    assert set(json.loads(created.output_text)) == {"city", "population"}
    assert created.text.format.type == "json_schema"
    (sent,) = sent_to_provider(provider)
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": schema, "strict": True},
    }


def test_a_codex_shaped_turn_streams(stack, provider):
    """What Codex CLI sends each turn: developer messages, store false, encrypted reasoning asked
    for, its own client_metadata, function tools, a stream."""
    request = {
        "model": MODEL,
        "instructions": "You are a coding agent.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hi"}]},
        ],
        "tools": [{**WEATHER_FUNCTION, "strict": False}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
        "client_metadata": {"session_id": "session-1", "turn_id": "turn-1"},
    }
    with httpx.stream(
        "POST",
        f"{stack.base_url}/v1/responses",
        headers={"Authorization": f"Bearer {stack.master_key}"},
        json=request,
        timeout=30,
    ) as response:
        assert response.status_code == 200, response.read()
        events = [data for _, data in read_events(response)]
    assert_stream_valid(events)
    assert events[-1]["type"] == "response.completed"
    (sent,) = sent_to_provider(provider)
    assert "client_metadata" not in sent
    assert [m["content"] for m in sent["messages"]][::2] == ["You are a coding agent.", "Say hi"]


def test_bad_requests_are_openai_errors(stack, provider):
    client = stack.client()
    cases = [
        ({"model": MODEL, "input": ""}, 400, "input"),
        ({"model": MODEL, "input": "hi", "tools": [{"type": "web_search"}]}, 400, "tools"),
        ({"model": MODEL, "input": "hi", "background": True, "store": False}, 400, None),
        ({"model": "no-such-model", "input": "hi"}, 404, "model"),
        ({"model": MODEL, "input": "hi", "previous_response_id": "resp_nope"}, 400, "previous_response_id"),
        ({"model": MODEL, "input": [{"type": "item_reference", "id": "x"}]}, 400, None),
        (
            {"model": MODEL, "input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]},
            400,
            "input[0]",
        ),
    ]
    with api(stack) as http:
        for request, status, param in cases:
            answer = http.post("/v1/responses", json=request)
            assert answer.status_code == status, (request, answer.text)
            assert_matches("ErrorResponse", answer.json())
            if param is not None:
                assert answer.json()["error"]["param"].startswith(param), answer.json()
        assert http.post("/v1/responses", content=b"{nope").status_code == 400
        assert http.get("/v1/responses/resp_nope").status_code == 404
    with pytest.raises(openai.BadRequestError):  # only background responses can be cancelled
        client.responses.cancel(client.responses.create(model=MODEL, input="hi").id)


def test_responses_are_metered_like_chat(stack, provider):
    key = stack.new_key()
    client = stack.client(key["key"])
    client.responses.create(model="cirrus-priced", input="Say hello")
    with api(stack, key["key"]) as http:
        deadline = time.time() + 10  # usage is written just after the response
        while (usage := http.get("/v1/usage", params={"group_by": "model"}).json())["total"]["requests"] < 1:
            assert time.time() < deadline, usage
            time.sleep(0.2)
    assert usage["total"]["requests"] == 1
    assert usage["total"]["cost_usd"] > 0
    assert [group["group"] for group in usage["data"]] == ["cirrus-priced"]


# --- background runs -------------------------------------------------------------------------------


def test_background_response_is_polled_to_completion(stack, provider):
    script(provider, {"reply": "Done in the background.", "latency_ms": 1500})
    client = stack.client()
    queued = client.responses.create(model=MODEL, input="Take your time", background=True)
    assert queued.status in ("queued", "in_progress") and queued.background is True
    assert_matches("Response", sdk_body(queued))
    seen = {queued.status}
    running = wait_response(client, queued.id, until={"in_progress", "completed"})
    seen.add(running.status)
    done = wait_response(client, queued.id)
    assert "in_progress" in seen
    assert done.status == "completed" and done.output_text == "Done in the background."
    assert_matches("Response", sdk_body(done))
    assert done.usage.total_tokens > 0
    with pytest.raises(openai.BadRequestError) as ended:  # too late to cancel
        client.responses.cancel(queued.id)
    assert "completed" in ended.value.body["message"]


def test_background_stream_and_starting_after_resume(stack, provider):
    script(provider, {"reply": "alpha beta gamma", "latency_ms": 500})
    headers = {"Authorization": f"Bearer {stack.master_key}"}
    request = {"model": MODEL, "input": "hi", "background": True, "stream": True}
    url = f"{stack.base_url}/v1/responses"
    with httpx.stream("POST", url, headers=headers, json=request, timeout=30) as r:
        assert r.status_code == 200
        live = [data for _, data in read_events(r)]
    assert_stream_valid(live)
    kinds = [e["type"] for e in live]
    assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    response_id = live[0]["response"]["id"]

    url = f"{stack.base_url}/v1/responses/{response_id}"
    with httpx.stream("GET", url, headers=headers, params={"stream": "true", "starting_after": 3}) as r:
        assert r.status_code == 200
        resumed = [data for _, data in read_events(r)]
    assert resumed == live[4:]  # the same events, from sequence number 4 on
    # The SDK's own way to ask for it.
    with stack.client().responses.retrieve(response_id, stream=True, starting_after=1) as stream:
        replayed = [sdk_body(event) for event in stream]
    assert [e["sequence_number"] for e in replayed] == list(range(2, len(live)))
    assert_stream_valid(replayed)


def test_starting_after_follows_a_running_response_live(stack, provider):
    script(provider, {"reply": "late answer", "latency_ms": 2000})
    client = stack.client()
    queued = client.responses.create(model=MODEL, input="hi", background=True)
    with client.responses.retrieve(queued.id, stream=True, starting_after=0) as stream:
        events = [sdk_body(event) for event in stream]  # follows until the response ends
    assert_stream_valid(events)
    assert events[0]["sequence_number"] == 1 and events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "late answer"


def test_cancel_a_background_response(stack, provider):
    script(provider, {"reply": "never seen", "latency_ms": 8000})
    client = stack.client()
    queued = client.responses.create(model=MODEL, input="slow", background=True)
    wait_response(client, queued.id, until={"in_progress"})
    cancelled = client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    assert_matches("Response", sdk_body(cancelled))
    time.sleep(2)  # past the job's cancel poll: the run stopped, and wrote no answer
    after = client.responses.retrieve(queued.id)
    assert after.status == "cancelled" and after.output == []
    assert client.responses.cancel(queued.id).status == "cancelled"  # cancelling again is harmless
    with client.responses.retrieve(queued.id, stream=True, starting_after=2) as stream:
        closing = [sdk_body(event) for event in stream]
    assert_stream_valid(closing)
    # OpenAI's stream has no `response.cancelled`: a cancelled one ends with an `error` event.
    assert closing[-1]["type"] == "error" and closing[-1]["code"] == "response_cancelled"


def test_a_background_response_with_tools_on_a_model_without_them_is_refused_at_once(stack, provider):
    with pytest.raises(openai.BadRequestError) as refused:
        stack.client().responses.create(
            model="cirrus-no-tools", input="hi", tools=[WEATHER_FUNCTION], background=True
        )
    assert refused.value.body["param"] == "tools"


# --- a background run whose worker is killed -------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_background_response_survives_its_worker_being_killed(workers):
    provider, key = workers.provider, workers.stack.master_key
    url = workers.start()
    script(provider, {"reply": "lost with the worker", "latency_ms": 10000})
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    queued = client.responses.create(model=MODEL, input="Survive this", background=True)
    wait_response(client, queued.id, until={"in_progress"})
    deadline = time.time() + 10  # the model call has begun: the kill lands mid-run
    while not provider_requests(provider):
        assert time.time() < deadline, "the model was never called"
        time.sleep(0.1)
    workers.kill()
    script(provider, {"reply": "Resumed after the crash."})
    url = workers.start()
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    done = wait_response(client, queued.id)
    assert done.status == "completed" and done.output_text == "Resumed after the crash."
    assert_matches("Response", sdk_body(done))
    with client.responses.retrieve(queued.id, stream=True, starting_after=-1) as stream:
        replayed = [sdk_body(event) for event in stream]
    assert_stream_valid(replayed)  # one clean sequence, though two workers wrote it
    kinds = [e["type"] for e in replayed]
    assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert kinds.count("response.in_progress") == 1 and kinds[-1] == "response.completed"


pytestmark = pytest.mark.timeout(60)
