"""Responses ⇄ chat: request validation, items to messages, settings to chat parameters, a
completion to output items, and the Response object against OpenAI's schema and SDK types."""

from __future__ import annotations

import json

import pytest
from openai.types.responses import Response as SDKResponse

from shared.clients.protocols import ModelFeatures
from shared.errors import InvalidRequestError
from shared.models.responses import ResponseCreate
from shared.models.validation import validate_body
from shared.services.responses import translate
from tests import factories
from tests.openapi import assert_matches

REASONS = ModelFeatures(function_calling=True, reasoning=True)
PLAIN = ModelFeatures()
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


def create(**body):
    return validate_body(ResponseCreate, {"model": "cirrus-local", "input": "Hi", **body})


def messages_for(request: ResponseCreate):
    return translate.to_messages(translate.stored_items(request.items()))


# --- requests Cirrus refuses, in OpenAI's words -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"temprature": 1}, "temprature", "Unrecognized request argument supplied: temprature"),
        ({"api_base": "http://evil"}, "api_base", "cannot be set by clients"),
        ({"input": []}, "input", "must not be empty"),
        ({"tools": [{"type": "web_search"}]}, "tools", "Cirrus runs function tools only"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "Cirrus accepts input items"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0]",
            "image_url",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0]",
            "file_data",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}]},
            "input[0]",
            "refusal",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "audio"}]}]},
            "input[0].content[0]",
            "a content part",
        ),
        ({"max_output_tokens": 8}, "max_output_tokens", "greater than or equal to 16"),
        ({"background": True, "store": False}, None, "needs `store: true`"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format", "needs `name`"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16"),
    ],
)
def test_what_cirrus_cannot_translate_is_a_400_naming_the_parameter(body, param, says):
    with pytest.raises(InvalidRequestError) as caught:
        create(**body)
    assert says in caught.value.message
    assert caught.value.param == param


# --- into chat --------------------------------------------------------------------------------------


def test_a_string_input_is_one_user_message_and_instructions_lead_as_system():
    request = create(instructions="Be brief.")
    messages = translate.system_message(request.instructions) + messages_for(request)
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_items_become_chat_messages_with_tool_calls_joined_to_their_assistant_turn():
    request = create(
        input=[
            {"role": "developer", "content": "Use tools."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Oslo"}',
            },
            {
                "type": "function_call",
                "call_id": "call_2",
                "name": "get_weather",
                "arguments": '{"city":"Rome"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "-3 C"},
            {
                "type": "function_call_output",
                "call_id": "call_2",
                "output": [{"type": "input_text", "text": "21 C"}],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},  # skipped: nothing a chat model reads
            {"type": "function_call", "call_id": "call_3", "name": "get_weather", "arguments": "{}"},
        ]
    )
    assert messages_for(request) == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "-3 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "21 C"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
    ]


def test_images_and_files_become_chat_content_parts():
    request = create(
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
                    {
                        "type": "input_file",
                        "filename": "a.pdf",
                        "file_data": "data:application/pdf;base64,AAAA",
                    },
                ],
            }
        ]
    )
    assert messages_for(request) == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                {
                    "type": "file",
                    "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,AAAA"},
                },
            ],
        }
    ]


def test_stored_items_are_openais_item_resources_with_ids():
    request = create(
        input=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"type": "function_call", "id": "fc_given", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "ok"},
        ]
    )
    items = translate.stored_items(request.items())
    assert [i["id"][:4] for i in items] == ["msg_", "msg_", "fc_g", "fco_"]
    page = {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"],
        "last_id": items[-1]["id"],
        "has_more": False,
    }
    assert_matches("ResponseItemList", page)


def test_settings_map_to_chat_parameters():
    request = create(
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        temperature=0.2,
        top_p=0.9,
        max_output_tokens=100,
        user="u1",
        metadata={"ticket": "42"},
        store=True,
        text={
            "format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}
        },
    )
    params = translate.chat_params(request, [{"role": "user", "content": "Hi"}], PLAIN)
    assert params == {
        "model": "cirrus-local",
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [
            {
                "type": "function",
                "function": {k: WEATHER[k] for k in ("name", "description", "parameters", "strict")},
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u1",
        "max_completion_tokens": 100,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
    }  # metadata and store are Cirrus's, never the provider's


def test_codex_client_metadata_is_accepted_and_kept_from_the_provider():
    # Codex CLI sends `client_metadata` (session and turn ids) on every turn; OpenAI's spec
    # leaves it out but its API takes it, so refusing it would make Codex unusable.
    request = create(client_metadata={"session_id": "s1", "turn_id": "t1"}, store=False)
    params = translate.chat_params(request, [{"role": "user", "content": "Hi"}], PLAIN)
    assert "client_metadata" not in params and "metadata" not in params


def test_json_mode_allowed_tools_and_reasoning_only_where_the_model_reasons():
    other = {**WEATHER, "name": "other"}
    request = create(
        tools=[WEATHER, other],
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "other"}],
        },
        text={"format": {"type": "json_object"}, "verbosity": "low"},
        reasoning={"effort": "high", "summary": "auto"},
    )
    plain = translate.chat_params(request, [], PLAIN)
    assert [t["function"]["name"] for t in plain["tools"]] == ["other"] and plain["tool_choice"] == "required"
    assert plain["response_format"] == {"type": "json_object"}
    assert "reasoning_effort" not in plain and "verbosity" not in plain
    reasoning = translate.chat_params(request, [], REASONS)
    assert reasoning["reasoning_effort"] == "high" and reasoning["verbosity"] == "low"


def test_tool_settings_without_tools_are_not_sent():
    params = translate.chat_params(create(tool_choice="auto", parallel_tool_calls=True), [], PLAIN)
    assert "tool_choice" not in params and "parallel_tool_calls" not in params


# --- out of chat --------------------------------------------------------------------------------------


def test_a_completion_becomes_a_message_and_function_calls():
    completion = factories.tool_call_completion(("call_9", "get_weather", {"city": "Oslo"}), text="Checking.")
    output, status, incomplete = translate.output_from_completion(completion)
    assert (status, incomplete) == ("completed", None)
    message, call = output
    assert (
        message["type"] == "message" and message["id"].startswith("msg_") and message["status"] == "completed"
    )
    assert message["content"] == [
        {"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}
    ]
    assert call["type"] == "function_call" and call["id"].startswith("fc_")
    assert (call["call_id"], call["name"], json.loads(call["arguments"])) == (
        "call_9",
        "get_weather",
        {"city": "Oslo"},
    )


@pytest.mark.parametrize(
    ("finish", "status", "details"),
    [
        ("stop", "completed", None),
        ("length", "incomplete", {"reason": "max_output_tokens"}),
        ("content_filter", "incomplete", {"reason": "content_filter"}),
    ],
)
def test_the_finish_reason_is_the_status(finish, status, details):
    completion = factories.completion_dict("Cut short")
    completion["choices"][0]["finish_reason"] = finish
    output, got, incomplete = translate.output_from_completion(completion)
    assert (got, incomplete) == (status, details)
    assert output[0]["status"] == ("incomplete" if status == "incomplete" else "completed")


def test_a_refusal_is_a_refusal_part():
    completion = factories.completion_dict("")
    completion["choices"][0]["message"].update(content=None, refusal="I can't help with that.")
    (message,), _, _ = translate.output_from_completion(completion)
    assert message["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]


def test_usage_maps_with_its_details():
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 6},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    assert translate.response_usage(usage) == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 14,
    }


def test_the_response_echoes_the_request_and_matches_the_spec_and_the_sdk():
    request = create(
        instructions="Be brief.", tools=[WEATHER], temperature=0.3, metadata={"a": "b"}, max_output_tokens=64
    )
    body = request.model_dump(mode="json", exclude_unset=True, by_alias=True, exclude={"input"})
    output, status, incomplete = translate.output_from_completion(factories.completion_dict("Hello there"))
    response = translate.response_object(
        response_id=translate.new_id("resp"),
        request=body,
        model="cirrus-local",
        status=status,
        created_at=1_700_000_000.5,
        output=output,
        usage=translate.response_usage(factories.completion_dict("Hello there")["usage"]),
        incomplete_details=incomplete,
        completed_at=1_700_000_001.0,
    )
    assert_matches("Response", response)
    parsed = SDKResponse.model_validate(response)
    assert parsed.output_text == "Hello there"
    assert (parsed.instructions, parsed.temperature, parsed.max_output_tokens) == ("Be brief.", 0.3, 64)
    assert parsed.tools[0].name == "get_weather" and parsed.metadata == {"a": "b"}
    assert (parsed.top_p, parsed.tool_choice, parsed.parallel_tool_calls, parsed.store) == (
        1.0,
        "auto",
        True,
        True,
    )
    assert response["completed_at"] == 1_700_000_001 and response["usage"]["total_tokens"] == 7


def test_settings_sent_as_null_show_openais_defaults():
    # Found by fuzzing /v1/responses: `"parallel_tool_calls": null` came back as null, which the
    # spec and the SDK's Response refuse.
    body = {"parallel_tool_calls": None, "tool_choice": None, "store": None}
    response = translate.response_object(
        response_id=translate.new_id("resp"), request=body, model="m", status="completed", created_at=1.0
    )
    assert (response["parallel_tool_calls"], response["tool_choice"], response["store"]) == (
        True,
        "auto",
        True,
    )
    assert_matches("Response", response)
    SDKResponse.model_validate(response)
