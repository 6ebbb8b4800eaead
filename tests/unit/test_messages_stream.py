"""A chat stream as Anthropic's stream events: the exact sequence, and what the official SDK
rebuilds from it."""

import anthropic.types
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event

from shared.services.messages.stream import ChatToEvents, message_events
from tests.factories import chunk_dicts

EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def chunk(delta=None, finish=None, **extra):
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "cirrus-local",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish, "logprobs": None, **extra}],
    }


def usage_chunk(usage=USAGE):
    return {**chunk(), "choices": [], "usage": usage}


def tool_delta(index, *, id_=None, name=None, arguments=""):
    call = {"index": index, "function": {"arguments": arguments}}
    if id_:
        call.update(id=id_, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


def translate(chunks, **options):
    translation = ChatToEvents("cirrus-local", message_id="msg_1", **options)
    events = translation.start()
    for c in chunks:
        events += translation.feed(c)
    return events + translation.finish()


def rebuilt(events):
    """The Message the SDK's stream helper builds from `events` (each validated as the SDK's type)."""
    snapshot, buffers = None, {}
    for event in events:
        if event["type"] == "ping":  # the SDK skips pings before parsing
            continue
        snapshot = accumulate_event(
            event=EVENT.validate_python(event), current_snapshot=snapshot, json_bufs=buffers
        )
    return snapshot


def test_text_stream_events_in_anthropics_order():
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hi"}),
        chunk({"content": " there"}),
        chunk(finish="stop"),
        usage_chunk(),
    ]
    assert translate(chunks) == [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "cirrus-local",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            },
        },
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " there"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {
                "input_tokens": 5,
                "output_tokens": 2,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        },
        {"type": "message_stop"},
    ]


def test_text_then_two_tool_calls_each_their_own_block():
    chunks = [
        chunk({"role": "assistant", "content": "Checking."}),
        chunk({"role": "assistant", "content": None, **tool_delta(0, id_="call_a", name="get_weather")}),
        chunk(tool_delta(0, arguments='{"city":')),
        chunk(tool_delta(0, arguments=' "Oslo"}')),
        chunk(tool_delta(1, id_="call_b", name="get_time", arguments="{}")),
        chunk(finish="tool_calls"),
        usage_chunk(),
    ]
    events = translate(chunks)
    assert [(e["type"], e.get("index")) for e in events] == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[5]["content_block"] == {
        "type": "tool_use",
        "id": "call_a",
        "name": "get_weather",
        "input": {},
    }
    assert events[6]["delta"] == {"type": "input_json_delta", "partial_json": '{"city":'}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    message = rebuilt(events)
    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[1].input == {"city": "Oslo"} and message.content[2].input == {}
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 2


@pytest.mark.parametrize(
    ("finish", "extra", "reason", "sequence"),
    [("length", {}, "max_tokens", None), ("stop", {"stop_reason": "END"}, "stop_sequence", "END")],
)
def test_finish_reasons(finish, extra, reason, sequence):
    events = translate([chunk({"content": "a"}), chunk(finish=finish, **extra)], stop_sequences=["END"])
    assert events[-2]["delta"] == {"stop_reason": reason, "stop_sequence": sequence}


def test_without_the_providers_usage_output_tokens_are_counted():
    events = translate(
        [chunk({"content": "one two three"}), chunk(finish="stop")], count_output=lambda t: len(t.split())
    )
    assert events[-2]["usage"]["output_tokens"] == 3


def test_an_empty_answer_has_no_blocks():
    events = translate([chunk({"role": "assistant", "content": ""}), chunk(finish="stop")])
    assert [e["type"] for e in events] == ["message_start", "ping", "message_delta", "message_stop"]


def test_the_sdk_rebuilds_the_same_message_the_events_describe():
    events = translate(chunk_dicts("Hello from the stream", include_usage=True))
    message = rebuilt(events)
    anthropic.types.Message.model_validate(message.model_dump())
    assert message.content[0].text == "Hello from the stream"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 4)


async def test_closing_the_events_closes_the_chat_stream():
    closed = []

    async def chunks():
        try:
            yield chunk({"content": "a"})
            yield chunk({"content": "b"})
        finally:
            closed.append(True)

    events = message_events(chunks(), ChatToEvents("m"))
    assert (await anext(events))["type"] == "message_start"
    await events.aclose()  # the client went away before any content
    assert closed == [True]
