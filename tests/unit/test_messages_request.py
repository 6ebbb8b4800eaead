"""Anthropic Messages request bodies: what is accepted, and the 400s for what is not."""

import pytest

from shared.errors import InvalidRequestError
from shared.models.messages import CountTokensCreate, MessageCreate
from shared.models.validation import validate_body
from tests.factories import message, message_body

# The shape Claude Code (2.1) sends: system blocks with cache_control, a system turn mid-conversation,
# adaptive thinking, context management and an effort.
CLAUDE_CODE = {
    "model": "cirrus-local",
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
        {"type": "text", "text": "You are a Claude agent.", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                {"type": "text", "text": "say hi", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {"role": "system", "content": "Available agent types: ..."},
    ],
    "tools": [
        {
            "name": "Bash",
            "description": "Run a command",
            "input_schema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
            },
        }
    ],
    "metadata": {"user_id": '{"device_id":"0c1b","account_uuid":"","session_id":"342c"}'},
    "thinking": {"type": "adaptive"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "high"},
}


def test_what_claude_code_sends_is_accepted():
    request = validate_body(MessageCreate, CLAUDE_CODE)
    assert request.body() == CLAUDE_CODE


def refusal(body, model=MessageCreate) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        validate_body(model, body)
    return info.value


def test_unknown_fields_are_refused_in_anthropics_words():
    err = refusal(message_body(frequency_penalty=1))
    assert (err.message, err.param) == (
        "frequency_penalty: Extra inputs are not permitted",
        "frequency_penalty",
    )


def test_steering_fields_are_refused():
    err = refusal(message_body(api_base="http://evil"))
    assert err.param == "api_base" and "cannot be set by clients" in err.message


def test_max_tokens_is_required_for_messages_not_for_counting():
    body = message_body()
    del body["max_tokens"]
    assert refusal(body).message == "Missing required parameter: 'max_tokens'."
    err = refusal(message_body(), CountTokensCreate)  # count_tokens takes no max_tokens
    assert err.param == "max_tokens"
    assert validate_body(CountTokensCreate, {"model": "m", "messages": [message()]}).model == "m"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (message_body(temperature=1.5), "temperature"),
        (message_body(max_tokens=0), "max_tokens"),
        (message_body(message("hi", role="tool")), "messages[0].role"),
        (message_body(message([{"type": "video", "url": "x"}])), "messages[0].content[0]"),
        (
            message_body(
                message(
                    [{"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "x"}}]
                )
            ),
            "messages[0].content[0].image.source.base64.media_type",
        ),
        (
            message_body(
                message([{"type": "image", "source": {"type": "url", "url": "file:///etc/passwd"}}])
            ),
            "messages[0].content[0].image.source.url.url",
        ),
        (message_body(tools=[{"name": "t"}]), "tools[0]"),
        (message_body(tool_choice={"type": "tool"}), "tool_choice"),
        (message_body(thinking={"type": "sometimes"}), "thinking.type"),
        (message_body(metadata={"user_id": "u", "extra": 1}), "metadata.extra"),
    ],
)
def test_bad_values_name_their_parameter(body, param):
    assert refusal(body).param == param


def test_server_tools_are_accepted_for_anthropic_deployments():
    request = validate_body(
        MessageCreate, message_body(tools=[{"type": "web_search_20250305", "name": "web_search"}])
    )
    assert not request.tools[0].is_custom
