"""Anthropic's Messages ⇄ chat completions: requests one way, answers the other, checked against
the official SDK's types."""

import anthropic.types
import pytest

from shared.errors import InvalidRequestError
from shared.models.messages import CountTokensCreate, MessageCreate
from shared.models.requests import ChatCompletionCreate
from shared.models.validation import validate_body
from shared.services.messages.translate import chat_messages, from_chat, message_usage, to_chat
from tests.factories import completion_dict, message, message_body

PNG = "iVBORw0KGgo="
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def chat(*messages, reasoning=False, **params):
    request = validate_body(MessageCreate, message_body(*messages, **params))
    params = to_chat(request, reasoning=reasoning)
    validate_body(ChatCompletionCreate, params)  # what the chat service is given must be valid chat
    return params


def test_plain_conversation_and_sampling_fields():
    params = chat(
        message("Hi"),
        message("Hello!", role="assistant"),
        message("How are you?"),
        max_tokens=100,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        stop_sequences=["\n\nHuman:"],
        metadata={"user_id": "user-7"},
    )
    assert params == {
        "model": "cirrus-local",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "How are you?"},
        ],
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["\n\nHuman:"],
        "user": "user-7",
    }  # top_k: no chat equivalent, dropped


def test_a_user_id_too_long_for_openai_becomes_its_hash():
    """Claude Code's user_id is a JSON object of ~150 characters; OpenAI refuses a `user` over 64."""
    claude_code = '{"device_id":"' + "b" * 64 + '","account_uuid":"","session_id":"' + "s" * 36 + '"}'
    first = chat(message("Hi"), metadata={"user_id": claude_code})["user"]
    assert first == chat(message("Again"), metadata={"user_id": claude_code})["user"]  # stable
    assert len(first) == 64 and set(first) <= set("0123456789abcdef")
    other = chat(message("Hi"), metadata={"user_id": claude_code.replace("s", "t")})["user"]
    assert other != first
    assert chat(message("Hi"), metadata={"user_id": "u" * 64})["user"] == "u" * 64


def test_system_prompt_string_blocks_and_a_system_turn_mid_conversation():
    blocks = [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}},
    ]
    params = chat(message("Hi"), {"role": "system", "content": "Now in German."}, system=blocks)
    assert params["messages"] == [
        {"role": "system", "content": "You are terse.\n\nAnswer in French."},
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Now in German."},
    ]
    assert chat(system="Be kind.")["messages"][0] == {"role": "system", "content": "Be kind."}


def test_user_blocks_become_parts_and_images_image_urls_never_fetched():
    content = [
        {"type": "text", "text": "What is in these?", "cache_control": {"type": "ephemeral"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    (user,) = chat(message(content))["messages"]
    assert user == {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ],
    }
    (single,) = chat(message([{"type": "text", "text": "just text"}]))["messages"]
    assert single == {"role": "user", "content": "just text"}


def test_documents_pdf_as_file_part_text_as_text():
    pdf = {
        "type": "document",
        "title": "spec.pdf",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
    }
    text = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}}
    (user,) = chat(message([pdf, text]))["messages"]
    assert user["content"] == [
        {
            "type": "file",
            "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
        },
        {"type": "text", "text": "plain words"},
    ]
    url = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
    with pytest.raises(InvalidRequestError, match="documents"):
        chat(message([url]))


def test_a_tool_use_round_trip():
    call = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Oslo"}}
    params = chat(
        message("Weather in Oslo?"),
        message(
            [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                call,
            ],
            role="assistant",
        ),
        message(
            [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "12 °C"},
                {"type": "text", "text": "And tomorrow?"},
            ]
        ),
        tools=[WEATHER],
        tool_choice={"type": "auto"},
    )
    assert params["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_01",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01", "content": "12 °C"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert params["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": "Weather in a city",
            },
        }
    ]
    assert params["tool_choice"] == "auto"


def test_tool_results_with_blocks_errors_and_images():
    results = [
        {
            "type": "tool_result",
            "tool_use_id": "a",
            "content": [{"type": "text", "text": "line 1"}, {"type": "text", "text": "line 2"}],
        },
        {"type": "tool_result", "tool_use_id": "b", "content": "no such file", "is_error": True},
        {
            "type": "tool_result",
            "tool_use_id": "c",
            "content": [
                {"type": "text", "text": "screenshot:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            ],
        },
        {"type": "tool_result", "tool_use_id": "d"},
    ]
    calls = [{"type": "tool_use", "id": i, "name": "read", "input": {}} for i in "abcd"]
    params = chat(message("go"), message(calls, role="assistant"), message(results))
    assert params["messages"][2:] == [
        {"role": "tool", "tool_call_id": "a", "content": "line 1\nline 2"},
        {"role": "tool", "tool_call_id": "b", "content": "Error: no such file"},
        {"role": "tool", "tool_call_id": "c", "content": "screenshot:"},
        {"role": "tool", "tool_call_id": "d", "content": ""},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}],
        },
    ]
    assert params["messages"][1]["content"] is None


def test_an_assistant_turn_of_thinking_only_is_left_out():
    thinking = message([{"type": "redacted_thinking", "data": "xyz"}], role="assistant")
    assert chat(message("a"), thinking, message("b"))["messages"] == [message("a"), message("b")]


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
            None,
        ),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ],
)
def test_tool_choice(choice, expected, parallel):
    params = chat(message("x"), tools=[WEATHER], tool_choice=choice)
    assert params["tool_choice"] == expected
    assert params.get("parallel_tool_calls") == parallel


def test_server_tools_and_many_stop_sequences_are_refused_for_chat_models():
    with pytest.raises(InvalidRequestError, match="server tools") as info:
        chat(message("x"), tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}])
    assert info.value.param == "tools"
    with pytest.raises(InvalidRequestError, match="at most 4") as info:
        chat(message("x"), stop_sequences=list("abcde"))
    assert info.value.param == "stop_sequences"


@pytest.mark.parametrize(
    ("fields", "effort"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "low"),
        ({"thinking": {"type": "enabled", "budget_tokens": 10000}}, "medium"),
        ({"thinking": {"type": "enabled", "budget_tokens": 32000}}, "high"),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "medium"}}, "medium"),
        ({"thinking": {"type": "adaptive"}}, None),
        ({"thinking": {"type": "disabled"}}, None),
    ],
)
def test_thinking_becomes_reasoning_effort_only_for_models_that_reason(fields, effort):
    assert chat(message("x"), reasoning=True, **fields).get("reasoning_effort") == effort
    assert "reasoning_effort" not in chat(message("x"), reasoning=False, **fields)


def test_a_reasoning_model_gets_max_completion_tokens():
    """OpenAI's o-series and gpt-5 refuse `max_tokens`; other servers may know only `max_tokens`."""
    reasoning = chat(message("x"), reasoning=True, max_tokens=500)
    assert reasoning["max_completion_tokens"] == 500 and "max_tokens" not in reasoning
    plain = chat(message("x"), reasoning=False, max_tokens=500)
    assert plain["max_tokens"] == 500 and "max_completion_tokens" not in plain


def test_anthropic_only_fields_are_dropped_and_structured_output_kept():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    params = chat(
        message("x"),
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        output_config={"effort": "high", "format": {"type": "json_schema", "schema": schema}},
    )
    assert params["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }
    assert "context_management" not in params and "reasoning_effort" not in params


def test_streaming_asks_for_usage():
    params = chat(message("x"), stream=True)
    assert params["stream"] is True and params["stream_options"] == {"include_usage": True}


# --- answers ------------------------------------------------------------------------------


def completion(content="Hello there", *, finish="stop", tool_calls=None, usage=None, **choice):
    body = completion_dict(content or "", model="cirrus-local")
    body["choices"][0]["message"]["content"] = content
    body["choices"][0]["finish_reason"] = finish
    body["choices"][0].update(choice)
    if tool_calls:
        body["choices"][0]["message"]["tool_calls"] = tool_calls
    if usage is not None:
        body["usage"] = usage
    return body


def test_a_text_answer_is_an_anthropic_message():
    message_ = from_chat(completion(usage={"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}))
    parsed = anthropic.types.Message.model_validate(message_)
    assert message_["id"].startswith("msg_") and len(message_["id"]) == 28
    assert message_ == {
        "id": message_["id"],
        "type": "message",
        "role": "assistant",
        "model": "cirrus-local",
        "content": [{"type": "text", "text": "Hello there"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "output_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    assert parsed.content[0].text == "Hello there"


def test_tool_calls_become_tool_use_blocks_with_input_objects():
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        },
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "not json"}},
    ]
    message_ = from_chat(completion(None, finish="tool_calls", tool_calls=calls))
    anthropic.types.Message.model_validate(message_)
    assert message_["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
    ]
    assert message_["stop_reason"] == "tool_use"
    # Some servers finish a tool call with `stop`: still a tool_use turn.
    assert from_chat(completion("", finish="stop", tool_calls=calls[:1]))["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "choice", "stops", "reason", "sequence"),
    [
        ("stop", {}, None, "end_turn", None),
        ("length", {}, None, "max_tokens", None),
        ("content_filter", {}, None, "refusal", None),
        ("stop", {"stop_reason": "END"}, ["END"], "stop_sequence", "END"),  # vLLM names the stop string
        ("stop", {"stop_reason": 128009}, ["END"], "end_turn", None),  # ... or a stop token id
    ],
)
def test_stop_reasons(finish, choice, stops, reason, sequence):
    message_ = from_chat(completion(finish=finish, **choice), stop_sequences=stops)
    assert (message_["stop_reason"], message_["stop_sequence"]) == (reason, sequence)


def test_a_refusal_is_text_with_stop_reason_refusal():
    body = completion(None)
    body["choices"][0]["message"]["refusal"] = "I can't help with that."
    message_ = from_chat(body)
    assert message_["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert message_["stop_reason"] == "refusal"


def test_an_empty_answer_has_no_blocks():
    assert from_chat(completion(""))["content"] == []


def test_usage_leaves_cached_tokens_out_of_input_tokens():
    usage = {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 60}}
    assert message_usage(usage) == {
        "input_tokens": 40,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }
    assert message_usage(None)["input_tokens"] == 0


def test_an_answer_sent_back_as_the_next_turn_translates_to_the_same_tool_call():
    calls = [
        {
            "id": "call_9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
        }
    ]
    answer = anthropic.types.Message.model_validate(
        from_chat(completion(None, finish="tool_calls", tool_calls=calls))
    )
    assistant = answer.to_param()
    assistant["content"] = [block.model_dump(exclude_none=True) for block in answer.content]
    params = chat(
        message("Weather?"),
        assistant,
        message([{"type": "tool_result", "tool_use_id": "call_9", "content": "sunny"}]),
    )
    assert params["messages"][1]["tool_calls"] == calls
    assert params["messages"][2] == {"role": "tool", "tool_call_id": "call_9", "content": "sunny"}


def test_count_tokens_requests_translate_their_messages_too():
    request = validate_body(CountTokensCreate, {"model": "m", "system": "s", "messages": [message("hi")]})
    assert chat_messages(request) == [{"role": "system", "content": "s"}, message("hi")]
