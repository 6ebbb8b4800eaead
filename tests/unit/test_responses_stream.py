"""The Responses event sequence from chat chunks: exact order, sequence numbers, OpenAI's event
schemas, and the official SDK's stream helper assembling the same Response."""

from __future__ import annotations

import json
from typing import Any

from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from shared.services.responses import translate
from shared.services.responses.stream import ResponseEvents
from tests import factories
from tests.openapi import assert_matches

SDK_EVENT = TypeAdapter(ResponseStreamEvent)


def snapshot(**state: Any) -> dict[str, Any]:
    return translate.response_object(
        response_id="resp_test",
        request={},
        model="cirrus-local",
        created_at=1_700_000_000,
        completed_at=1_700_000_001,
        **state,
    )


def run(
    chunks: list[dict[str, Any]], usage: dict[str, Any] | None = None
) -> tuple[ResponseEvents, list[dict]]:
    stream = ResponseEvents(snapshot)
    events = stream.opened()
    for chunk in chunks:
        events += stream.feed(chunk)
    return stream, events + stream.finish(usage)


def check(events: list[dict]) -> None:
    """Numbered 0, 1, 2, ... with no gap; each valid for OpenAI's spec and the SDK's types; and the
    SDK's stream helper builds the final Response from them."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    state = ResponseStreamState(input_tools=[], text_format=omit)
    for event in events:
        assert_matches("ResponseStreamEvent", event)
        parsed = SDK_EVENT.validate_python(event)
        if event["type"] != "error":
            state.handle_event(parsed)
    if events[-1]["type"] == "response.completed":
        assert state._completed_response is not None


def test_a_text_answer_is_one_message_with_a_delta_per_chunk():
    completion = factories.completion_dict("Hello brave world")
    stream, events = run(factories.replayed_chunks(completion), usage=completion["usage"])
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    check(events)
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == [
        "Hello",
        " brave",
        " world",
    ]
    added, done = events[2]["item"], events[9]["item"]
    assert added["status"] == "in_progress" and added["content"] == []
    assert done["status"] == "completed" and done["content"][0]["text"] == "Hello brave world"
    assert {e.get("item_id") for e in events[3:9]} == {added["id"]}
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"] == [done]
    assert final["usage"]["output_tokens"] == 3  # the stream's usage, passed in at its end
    assert stream.response == final


def test_tool_calls_are_function_call_items_with_argument_deltas():
    completion = factories.tool_call_completion(
        ("call_a", "get_weather", {"city": "Oslo"}), ("call_b", "get_time", {"zone": "CET"}), text="Checking."
    )
    _, events = run(factories.replayed_chunks(completion, include_usage=True))
    kinds = [e["type"] for e in events]
    assert kinds[:10] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",  # the message
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",  # the first call
        "response.function_call_arguments.delta",
    ]
    check(events)
    first_done = kinds.index("response.function_call_arguments.done")
    assert set(kinds[9:first_done]) == {"response.function_call_arguments.delta"}
    assert kinds[first_done + 1 : first_done + 3] == [
        "response.output_item.done",
        "response.output_item.added",
    ]
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]["response"]
    _, first, second = final["output"]
    assert (first["call_id"], first["name"], json.loads(first["arguments"])) == (
        "call_a",
        "get_weather",
        {"city": "Oslo"},
    )
    assert (second["call_id"], json.loads(second["arguments"])) == ("call_b", {"zone": "CET"})
    deltas = "".join(e["delta"] for e in events if e.get("item_id") == first["id"] and "delta" in e)
    assert deltas == first["arguments"]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [0, 1, 2]
    assert final["usage"]["input_tokens"] == 5  # the usage chunk's


def test_a_length_finish_ends_incomplete():
    completion = factories.completion_dict("cut off here")
    completion["choices"][0]["finish_reason"] = "length"
    _, events = run(factories.replayed_chunks(completion))
    check(events)
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["status"] == "incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["response"]["output"][0]["status"] == "incomplete"


def test_a_refusal_streams_as_refusal_events():
    completion = factories.completion_dict("")
    completion["choices"][0]["message"].update(content=None, refusal="No.")
    chunks = factories.replayed_chunks(completion)
    chunks.insert(
        1, {**chunks[0], "choices": [{"index": 0, "delta": {"refusal": "No."}, "finish_reason": None}]}
    )
    _, events = run(chunks)
    check(events)
    assert [e["type"] for e in events[2:-1]] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert events[-1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]


def test_an_empty_answer_is_still_one_message():
    _, events = run(factories.replayed_chunks(factories.completion_dict("")))
    check(events)
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""


def test_a_failure_after_the_start_is_an_error_event_then_response_failed():
    stream = ResponseEvents(snapshot)
    events = stream.opened()
    for chunk in factories.replayed_chunks(factories.completion_dict("one two three"))[:3]:
        events += stream.feed(chunk)
    events += stream.fail("upstream_error", "The model provider returned an error.")
    check(events)
    error, failed = events[-2:]
    assert (error["type"], error["code"], error["message"]) == (
        "error",
        "upstream_error",
        "The model provider returned an error.",
    )
    assert failed["type"] == "response.failed"
    assert failed["response"]["error"] == {
        "code": "server_error",
        "message": "The model provider returned an error.",
    }
    assert failed["response"]["output"][0]["status"] == "incomplete"
    assert failed["response"]["output"][0]["content"][0]["text"] == "one two"


def test_a_replay_of_an_ended_response_gives_the_same_events_as_its_stream():
    completion = factories.tool_call_completion(("call_a", "f", {"x": 1}), text="Sure.")
    stream, live = run(factories.replayed_chunks(completion))
    again = ResponseEvents(snapshot, sequence=2).replay(stream.response)
    check(live[:2] + again)

    # The same items, parts and texts; deltas may be cut differently.
    def shape(events):
        return [
            (e["type"], e.get("item", {}).get("id"), e.get("text"), e.get("arguments"))
            for e in events
            if not e["type"].endswith(".delta")
        ]

    assert shape(again) == shape(live[2:])


def test_queued_background_responses_open_with_response_queued():
    events = ResponseEvents(snapshot).opened(queued=True)
    check(events)
    assert [e["type"] for e in events] == ["response.created", "response.queued"]
    assert events[0]["response"]["status"] == "queued"
