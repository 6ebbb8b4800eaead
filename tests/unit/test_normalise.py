"""Both adapters' answers become OpenAI's wire shapes (validated against OpenAI's spec), and
provider failures become the right errors for the client and the router."""

import base64
import json
import struct

import pytest

from shared.clients.llm.errors import from_response, retry_after_seconds
from shared.clients.llm.litellm_adapter import provider_message
from shared.clients.llm.shapes import (
    complete_chat,
    complete_embeddings,
    complete_text,
    normalise_chunk,
    normalise_completion,
)
from tests.openapi import assert_matches

# What LiteLLM 1.102's ModelResponse.model_dump() gives for an OpenAI-compatible upstream.
LITELLM_COMPLETION = {
    "id": "c1",
    "created": 1,
    "model": "gpt-4o-mini",
    "object": "chat.completion",
    "system_fingerprint": None,
    "choices": [
        {
            "finish_reason": "stop",
            "index": 0,
            "message": {
                "content": "hi",
                "role": "assistant",
                "tool_calls": None,
                "function_call": None,
                "provider_specific_fields": {"refusal": None},
            },
            "provider_specific_fields": {},
        }
    ],
    "usage": {
        "completion_tokens": 1,
        "prompt_tokens": 5,
        "total_tokens": 6,
        "completion_tokens_details": None,
        "prompt_tokens_details": None,
    },
    "moderation": None,
    "service_tier": None,
}
LITELLM_TOOL_CALL = {
    **LITELLM_COMPLETION,
    "choices": [
        {
            "finish_reason": "tool_calls",
            "index": 0,
            "message": {
                "content": None,
                "role": "assistant",
                "function_call": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a":1}'}}
                ],
            },
        }
    ],
}
LITELLM_CHUNK = {
    "id": "c1",
    "created": 1,
    "model": "gpt-4o-mini",
    "object": "chat.completion.chunk",
    "system_fingerprint": None,
    "choices": [
        {
            "finish_reason": None,
            "index": 0,
            "delta": {
                "provider_specific_fields": None,
                "refusal": None,
                "content": "there ",
                "role": None,
                "function_call": None,
                "tool_calls": None,
                "audio": None,
            },
            "logprobs": None,
        }
    ],
    "provider_specific_fields": None,
    "citations": None,
    "moderation": None,
    "service_tier": None,
}
LITELLM_USAGE_CHUNK = {
    "id": "c1",
    "created": 1,
    "model": "gpt-4o-mini",
    "object": "chat.completion.chunk",
    "choices": [
        {
            "finish_reason": None,
            "index": 0,
            "delta": {
                "content": None,
                "role": None,
                "function_call": None,
                "tool_calls": None,
                "audio": None,
            },
            "logprobs": None,
        }
    ],
    "usage": {
        "completion_tokens": 6,
        "prompt_tokens": 5,
        "total_tokens": 11,
        "completion_tokens_details": {
            "accepted_prediction_tokens": None,
            "audio_tokens": None,
            "reasoning_tokens": 0,
        },
        "prompt_tokens_details": None,
    },
}


def test_completion_matches_openai_schema_and_keeps_the_public_model_name():
    out = normalise_completion(LITELLM_COMPLETION, "cirrus-local")
    assert_matches("CreateChatCompletionResponse", out)
    assert out["model"] == "cirrus-local"
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "hi", "refusal": None}
    assert out["choices"][0]["logprobs"] is None
    assert "provider_specific_fields" not in str(out)
    assert "system_fingerprint" not in out  # null is not allowed there


def test_tool_calls_survive():
    out = normalise_completion(LITELLM_TOOL_CALL, "m")
    assert_matches("CreateChatCompletionResponse", out)
    assert out["choices"][0]["message"]["tool_calls"][0]["function"] == {
        "name": "add",
        "arguments": '{"a":1}',
    }
    assert out["choices"][0]["finish_reason"] == "tool_calls"


def test_chunk_drops_litellm_fields_and_null_deltas():
    out = normalise_chunk(LITELLM_CHUNK, "m", include_usage=False)
    assert_matches("CreateChatCompletionStreamResponse", out)
    assert out["choices"][0]["delta"] == {"content": "there "}
    assert "usage" not in out


def test_chunk_carries_null_usage_when_the_client_asked_for_usage():
    out = normalise_chunk(LITELLM_CHUNK, "m", include_usage=True)
    assert_matches("CreateChatCompletionStreamResponse", out)
    assert out["usage"] is None


def test_usage_chunk_has_no_choices_like_openai():
    out = normalise_chunk(LITELLM_USAGE_CHUNK, "m", include_usage=True)
    assert_matches("CreateChatCompletionStreamResponse", out)
    assert out["choices"] == []
    assert out["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 6,
        "total_tokens": 11,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_unknown_finish_reason_becomes_stop():
    raw = {
        **LITELLM_COMPLETION,
        "choices": [{**LITELLM_COMPLETION["choices"][0], "finish_reason": "end_turn"}],
    }
    assert normalise_completion(raw, "m")["choices"][0]["finish_reason"] == "stop"


def test_provider_message_strips_litellm_decoration():
    text = (
        "litellm.BadRequestError: OpenAIException - Invalid schema for function 'f'. "
        "Received Model Group=cirrus-local\nAvailable Model Group Fallbacks=None"
    )
    assert provider_message(Exception(text)) == "Invalid schema for function 'f'."


def test_retry_after_forms():
    assert retry_after_seconds({"Retry-After": "7"}) == 7
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "garbage"}) is None
    assert 0 <= retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0


def test_a_compatible_servers_answer_gets_openais_required_fields():
    """vLLM, Ollama and llama.cpp leave out fields OpenAI's schema requires; nothing else changes."""
    lean = {
        "id": "x",
        "created": 1,
        "model": "llama3",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": None}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        "stop_reason": None,
    }
    out = complete_chat(lean)
    assert_matches("CreateChatCompletionResponse", out)
    assert out["object"] == "chat.completion" and out["choices"][0]["finish_reason"] == "stop"
    assert out["choices"][0]["message"]["refusal"] is None and "stop_reason" in out
    text = complete_text({"id": "t", "created": 1, "model": "m", "choices": [{"index": 0, "text": "hi"}]})
    assert_matches("CreateCompletionResponse", text)


def test_embeddings_pack_base64_as_little_endian_float32():
    def body():
        return {"data": [{"embedding": [0.5, -1.0]}], "model": "m", "usage": {"prompt_tokens": 2}}

    assert_matches("CreateEmbeddingResponse", complete_embeddings(body(), "float"))
    out = complete_embeddings(body(), "base64")  # OpenAI's schema types it as an array only
    assert struct.unpack("<2f", base64.b64decode(out["data"][0]["embedding"])) == (0.5, -1.0)
    assert out["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


@pytest.mark.parametrize(
    ("status", "body", "kind", "client_status", "code"),
    [
        (429, b'{"error": {"message": "slow down"}}', "other", 429, "rate_limit_exceeded"),
        (400, b'{"error": {"message": "x", "code": "context_length_exceeded"}}', "context_window", 400, None),
        (
            400,
            b'{"error": {"message": "This model\'s maximum context length is 8 tokens"}}',
            "context_window",
            400,
            None,
        ),
        (400, b'{"error": {"message": "flagged", "code": "content_filter"}}', "content_policy", 400, None),
        (400, b'{"error": {"message": "Bad temperature", "param": "temperature"}}', "other", 400, None),
        (401, b'{"error": {"message": "bad key sk-123"}}', "other", 502, "upstream_error"),
        (404, b"not json", "other", 502, "upstream_error"),
        (500, b"", "other", 502, "upstream_error"),
        (503, b"", "other", 502, "upstream_error"),
        (408, b"", "other", 504, "upstream_timeout"),
    ],
)
def test_provider_error_answers_map_for_client_and_router(status, body, kind, client_status, code):
    failure = from_response(status, body, {"retry-after": "3"})
    assert failure.status == status and failure.kind == kind
    assert failure.error.status == client_status
    if code:
        assert failure.error.code == code
    assert "sk-123" not in failure.error.message  # Cirrus's provider credentials are never echoed
    if status in (429, 503):
        assert failure.retry_after == 3


def test_provider_message_reads_a_json_error_body_passed_on_as_text():
    text = 'litellm.BadRequestError: Hosted_vllmException - {"error": {"message": "bad thing", "code": null}}'
    assert provider_message(Exception(text)) == "bad thing"


# What LiteLLM 1.102's OpenAIModerationResponse.model_dump() gives: the SDK's attribute names.
LITELLM_MODERATION = {
    "id": "modr-1",
    "model": "omni-moderation-latest",
    "results": [
        {
            "flagged": True,
            "categories": {
                "violence": True,
                "self_harm_intent": False,
                "hate_threatening": False,
                "illicit": None,
            },
            "category_scores": {"violence": 0.9, "self_harm_intent": 0.0, "hate_threatening": 0.0},
            "category_applied_input_types": {"violence": ["text"], "self_harm_intent": ["text"]},
        }
    ],
}


def test_moderation_categories_get_openais_names_back():
    from shared.clients.llm.surface_shapes import moderation

    body = moderation(LITELLM_MODERATION, "public-name")
    [result] = body["results"]
    assert body["model"] == "public-name" and body["id"] == "modr-1"
    assert set(result["categories"]) == {"violence", "self-harm/intent", "hate/threatening"}
    assert result["category_applied_input_types"]["self-harm/intent"] == ["text"]


def test_surface_answers_that_are_not_their_shape_are_provider_errors():
    from shared.clients.llm import surface_shapes
    from shared.errors import UpstreamError

    for shape, raw in [
        (lambda r: surface_shapes.moderation(r, "m"), {"results": "no"}),
        (surface_shapes.images, {"created": 1}),
        (surface_shapes.transcription, {"duration": 1}),
        (lambda r: surface_shapes.rerank(r, None), {"results": [{"index": 0}]}),
    ]:
        with pytest.raises(UpstreamError):
            shape(raw)


def test_images_drop_what_litellm_dumps_as_none_and_empty_usage():
    from shared.clients.llm.surface_shapes import images

    raw = {
        "created": 1,
        "data": [{"b64_json": "aGk=", "url": None, "revised_prompt": None}],
        "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        "size": None,
        "_hidden_params": {},
    }
    body = images(raw)
    assert body == {"created": 1, "data": [{"b64_json": "aGk="}]}
    assert_matches("ImagesResponse", body)


INTERNAL = (
    "Invalid value for 'temperature': deployment gpt4o-prod-eastus2 on cirrus-aoai-7f3 only takes "
    "temperature <= 1; ask #llm-platform-oncall to raise it. Key sk-live-abcdef123456 was used."
)


@pytest.mark.parametrize(
    ("body", "code", "expected"),
    [
        (
            {"message": INTERNAL, "param": "temperature"},
            None,
            "The model provider rejected the request as invalid (parameter 'temperature'). "
            "Its full answer is in the gateway's logs under this request's id.",
        ),
        (
            {"message": INTERNAL, "param": "not a param; rm -rf"},
            None,
            "The model provider rejected the request as invalid. "
            "Its full answer is in the gateway's logs under this request's id.",
        ),
        (
            {"message": "deployment gpt4o-prod-eastus2: This model's maximum context length is 8192 tokens."},
            "context_length_exceeded",
            "This model's maximum context length is 8192 tokens. Please reduce the length of the messages.",
        ),
        (
            {"message": "cirrus-aoai-7f3: The response was filtered (content management policy)"},
            "content_policy_violation",
            "The model provider refused the request under its content policy.",
        ),
    ],
)
def test_a_providers_400_reaches_the_client_clean_and_the_log_whole(body, code, expected, caplog, spans):
    from opentelemetry import trace

    with trace.get_tracer("test").start_as_current_span("attempt"):
        failure = from_response(400, json.dumps({"error": body}).encode(), {})
    assert failure.error.message == expected and failure.error.status == 400
    if code:
        assert failure.error.code == code
    logged = caplog.text
    assert body["message"].split(" Key ")[0] in logged  # the operators' copy is whole
    assert "sk-live-abcdef123456" not in logged  # but never a credential the provider echoed
    (span,) = spans.get_finished_spans()
    (event,) = span.events
    assert event.name == "cirrus.provider_error"
    assert body["message"].split(" Key ")[0] in event.attributes["message"]
