"""The chat request is checked before any provider call; errors name the parameter."""

import pytest

from shared.errors import InvalidRequestError
from shared.models.requests import STEERING_FIELDS, ChatCompletionCreate, CompletionCreate, EmbeddingCreate
from shared.models.validation import param_path, validate_body
from tests.factories import chat_body, message


def invalid(body) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        validate_body(ChatCompletionCreate, body)
    return info.value


def test_valid_request_keeps_only_what_the_client_set():
    body = chat_body(
        message("Hi"),
        temperature=0.2,
        user="u-1",
        seed=7,
        stop=["\n"],
        n=2,
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        tool_choice="auto",
        response_format={"type": "json_object"},
        max_tokens=5,
    )
    params = validate_body(ChatCompletionCreate, body).upstream_params()
    assert params == body


def test_message_extras_such_as_cache_control_pass_through():
    body = chat_body(
        {"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]}
    )
    assert validate_body(ChatCompletionCreate, body).upstream_params() == body


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"messages": [message()]}, "model", "Missing required parameter: 'model'."),
        ({"model": "m"}, "messages", "Missing required parameter: 'messages'."),
        (chat_body(temperature=3), "temperature", "less than or equal to 2"),
        (chat_body(n=0), "n", "greater than or equal to 1"),
        (chat_body(max_tokens="many"), "max_tokens", "valid integer"),
        (chat_body(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
        (chat_body({"role": "robot", "content": "x"}), "messages[0].role", "Input should be"),
        (chat_body({"role": "tool", "content": "x"}), "messages[0]", "tool_call_id"),
        (chat_body({"role": "user"}), "messages[0]", "needs `content`"),
        (
            chat_body({"role": "user", "content": [{"type": "video"}]}),
            "messages[0].content[0].type",
            "Input should be",
        ),
        (chat_body(tools=[{"type": "function"}]), "tools", "function"),
        ({"model": "m", "messages": []}, "messages", "at least 1 item"),
    ],
)
def test_invalid_fields_name_their_param(body, param, fragment):
    err = invalid(body)
    assert err.status == 400
    assert err.param == param
    assert fragment in err.message


def test_unknown_field_is_rejected_as_openai_does():
    err = invalid(chat_body(temprature=0.5))
    assert err.param == "temprature"
    assert err.message == "Unrecognized request argument supplied: temprature"


@pytest.mark.parametrize("field", sorted(STEERING_FIELDS))
def test_fields_that_steer_the_provider_connection_are_refused(field):
    err = invalid(chat_body(**{field: "http://169.254.169.254/"}))
    assert err.param == field
    assert "cannot be set by clients" in err.message


def test_body_must_be_an_object():
    assert "JSON object" in invalid([1, 2]).message


def test_param_path_drops_union_tags():
    assert (
        param_path(("messages", 0, "content", "list[ContentPart]", 1, "type"))
        == "messages[0].content[1].type"
    )
    assert param_path(("stop", "str")) == "stop"
    assert param_path(()) == ""


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (CompletionCreate, {"model": "m", "prompt": "hi"}),
        (EmbeddingCreate, {"model": "m", "input": ["a", "b"]}),
    ],
)
def test_every_endpoint_refuses_steering_and_unknown_fields(model, body):
    assert validate_body(model, body).upstream_params() == body
    for field, value in [("api_base", "http://evil/"), ("custom_llm_provider", "bedrock"), ("nope", 1)]:
        with pytest.raises(InvalidRequestError) as info:
            validate_body(model, {**body, field: value})
        assert info.value.param == field


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "input": ""}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": ["x"] * 2049}, "input"),
        ({"model": "m", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
    ],
)
def test_embedding_inputs_are_checked(body, param):
    with pytest.raises(InvalidRequestError) as info:
        validate_body(EmbeddingCreate, body)
    assert info.value.param == param


def test_completion_needs_a_prompt():
    with pytest.raises(InvalidRequestError) as info:
        validate_body(CompletionCreate, {"model": "m"})
    assert info.value.param == "prompt"
