"""Responses passthrough without a network: which deployments take `/responses` natively (the model
file's `supported_endpoints`), which path the router sends each attempt down, how the native
stream is relayed, and the body that goes upstream (Cirrus's state kept out of it)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from shared.clients.llm import ModelRouter
from shared.clients.llm.deployments import read_routing
from shared.clients.llm.errors import from_response
from shared.clients.llm.openai_wire import _address
from shared.clients.llm.operations import Operation
from shared.config import ConfigError, ModelConfig
from shared.errors import InvalidRequestError, UpstreamError
from shared.models.responses import ResponseCreate, ResponseRecord
from shared.models.validation import validate_body
from shared.services.responses import passthrough
from tests import factories

NATIVE = {"supported_endpoints": ["/v1/chat/completions", "/v1/responses"]}


def entry(name: str, id_: str, model: str = "openai/gpt-4o-mini", info: Any = None, **params: Any) -> dict:
    return {
        "model_name": name,
        "litellm_params": {"model": model, "api_base": "http://upstream.test/v1", "api_key": "k", **params},
        "model_info": {"id": id_, **(info or {})},
    }


def response_body(text: str = "hi there", *, usage: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "resp_upstream",
        "object": "response",
        "status": "completed",
        "model": "gpt-4o-mini-2024",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
    }
    if usage:
        body["usage"] = {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9}
    return body


def response_events(*, close: bool = True, error: bool = False) -> list[dict[str, Any]]:
    opening = {**response_body(), "status": "in_progress", "output": []}
    del opening["usage"]
    events = [
        {"type": "response.created", "sequence_number": 0, "response": opening},
        {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1", "delta": "hi"},
    ]
    if error:
        events.append({"type": "error", "sequence_number": 2, "code": "server_error", "message": "boom"})
    if close:
        events.append({"type": "response.completed", "sequence_number": 3, "response": response_body()})
    return events


class RecordingAdapter:
    """Answers chat as chat and Responses as a Response; records (deployment, op, params)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Operation, dict[str, Any]]] = []
        self.failing: set[str] = set()
        self.events: list[dict[str, Any]] = response_events()

    def _record(self, deployment: Any, op: Operation, params: dict[str, Any]) -> None:
        self.calls.append((deployment.id, op, params))
        if deployment.id in self.failing:
            raise from_response(500, b'{"error": {"message": "down"}}', {})

    async def complete(self, deployment, op, params) -> dict[str, Any]:
        self._record(deployment, op, params)
        if op is Operation.RESPONSES:
            return response_body()
        return factories.completion_dict(f"chat from {deployment.id}")

    async def open_stream(self, deployment, op, params):
        self._record(deployment, op, params)
        items = (
            self.events
            if op is Operation.RESPONSES
            else factories.chunk_dicts("chat words", model="upstream", include_usage=True)
        )

        async def events():
            for item in items:
                yield dict(item)

        return events()

    async def aclose(self) -> None:
        pass


@pytest.fixture
def adapter() -> RecordingAdapter:
    return RecordingAdapter()


@pytest.fixture
def router(adapter):
    config = ModelConfig.model_validate(
        {
            "model_list": [
                entry("native", "native-1", info=NATIVE),
                entry("plain", "plain-1"),
                entry("mixed", "mixed-native", info=NATIVE),
                entry("mixed", "mixed-chat"),
            ],
            "router_settings": {"num_retries": 0, "fallbacks": [{"native": ["plain"]}]},
        }
    )
    return ModelRouter(config, native=adapter, rng=random.Random(1))


def body(model: str = "native", **extra: Any) -> dict[str, Any]:
    return {"model": model, "input": "Hello", "store": False, **extra}


def chat_of(model: str):
    return lambda: {"model": model, "messages": [factories.message("Hello")]}


def untranslatable():
    raise InvalidRequestError("no chat model can do this", param="tools")


# --- which deployments are native -----------------------------------------------------------------


def test_only_openai_wire_deployments_listing_v1_responses_are_native():
    table = read_routing(
        ModelConfig.model_validate(
            {
                "model_list": [
                    entry("a", "flagged", info=NATIVE),
                    entry("b", "unflagged", info={"supported_endpoints": ["/v1/chat/completions"]}),
                    entry("c", "no-list"),
                    entry("d", "via-litellm", info={**NATIVE, "adapter": "litellm"}),
                    entry("e", "anthropic", model="anthropic/claude-sonnet-4-5", info=NATIVE),
                    entry(
                        "f",
                        "azure",
                        model="azure/my-deployment",
                        api_version="2025-04-01-preview",
                        info=NATIVE,
                    ),
                ]
            }
        ),
        environ={},
    )
    native = {d.id for d in table.deployments if d.native_responses}
    assert native == {"flagged", "azure"}


def test_supported_endpoints_must_be_a_list_of_paths():
    config = ModelConfig.model_validate(
        {"model_list": [entry("a", "a-1", info={"supported_endpoints": "/v1/responses"})]}
    )
    with pytest.raises(ConfigError, match="supported_endpoints"):
        read_routing(config, environ={})


def test_azure_responses_are_addressed_per_resource_with_the_deployment_as_model():
    table = read_routing(
        ModelConfig.model_validate(
            {
                "model_list": [
                    {
                        "model_name": "az",
                        "litellm_params": {
                            "model": "azure/dep",
                            "api_base": "https://res.openai.azure.com",
                            "api_key": "k",
                            "api_version": "2025-04-01-preview",
                        },
                    },
                    {
                        "model_name": "az1",
                        "litellm_params": {
                            "model": "azure/dep",
                            "api_base": "https://res.openai.azure.com/openai/v1",
                            "api_key": "k",
                            "api_version": "v1",
                        },
                    },
                ]
            }
        ),
        environ={},
    )
    dated, v1 = table.deployments
    target = _address(dated, Operation.RESPONSES)
    assert target.url == "https://res.openai.azure.com/openai/responses?api-version=2025-04-01-preview"
    assert target.model_in_body
    assert _address(dated, Operation.CHAT).url.startswith(
        "https://res.openai.azure.com/openai/deployments/dep/"
    )
    assert _address(v1, Operation.RESPONSES).url == "https://res.openai.azure.com/openai/v1/responses"


# --- the path each attempt takes -----------------------------------------------------------------


async def test_a_native_deployment_gets_the_body_as_it_is(router, adapter):
    result = await router.responses(body(include=["reasoning.encrypted_content"]), untranslatable)
    assert result.wire == "responses"
    ((deployment, op, sent),) = adapter.calls
    assert (deployment, op) == ("native-1", Operation.RESPONSES)
    assert sent == {
        "model": "native",
        "input": "Hello",
        "store": False,
        "include": ["reasoning.encrypted_content"],
    }
    assert result.body["model"] == "native"  # the public name, not the provider's
    assert result.usage == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert result.finish_reasons == ["completed"] and not result.usage_estimated


async def test_any_other_deployment_gets_the_chat_translation(router, adapter):
    result = await router.responses(body("plain"), chat_of("plain"))
    assert result.wire == "chat"
    ((deployment, op, sent),) = adapter.calls
    assert (deployment, op) == ("plain-1", Operation.CHAT)
    assert sent["messages"] == [factories.message("Hello")] and "input" not in sent
    assert result.body["choices"][0]["message"]["content"] == "chat from plain-1"


async def test_a_fallback_crosses_from_native_to_chat(router, adapter):
    adapter.failing.add("native-1")
    result = await router.responses(body(), chat_of("plain"))
    assert [(d, op) for d, op, _ in adapter.calls] == [
        ("native-1", Operation.RESPONSES),
        ("plain-1", Operation.CHAT),
    ]
    assert result.wire == "chat" and result.served_by.model == "plain" and result.served_by.fallbacks == 1


async def test_a_request_no_chat_model_can_serve_fails_only_the_chat_attempt(router, adapter):
    adapter.failing.add("native-1")
    with pytest.raises(UpstreamError):  # the error of the model the client asked for
        await router.responses(body(), untranslatable)


async def test_a_mixed_name_sends_each_deployment_its_own_wire(router, adapter):
    seen = set()
    for _ in range(12):
        result = await router.responses(body("mixed"), chat_of("mixed"))
        seen.add((result.served_by.deployment, result.wire))
    assert seen == {("mixed-native", "responses"), ("mixed-chat", "chat")}


async def test_a_native_answer_without_usage_is_counted(router, adapter):
    adapter.complete = _returning(response_body("one two three", usage=False))  # type: ignore[method-assign]
    result = await router.responses(body(), chat_of("native"))
    assert result.usage_estimated and result.usage["completion_tokens"] > 0


async def test_an_answer_that_is_not_a_response_fails_the_attempt(router, adapter):
    adapter.complete = _returning({"object": "chat.completion"})  # type: ignore[method-assign]
    with pytest.raises(UpstreamError):
        await router.responses(body(), untranslatable)


def _returning(answer: dict[str, Any]):
    async def complete(deployment, op, params):
        return dict(answer)

    return complete


# --- streams --------------------------------------------------------------------------------------


async def test_a_native_stream_is_relayed_event_by_event(router, adapter):
    stream = await router.responses_stream(
        body(stream_options={"include_obfuscation": False}), untranslatable
    )
    assert stream.wire == "responses"
    events = [event async for event in stream]
    assert [e["sequence_number"] for e in events] == [0, 1, 3]  # the provider's numbers
    assert all(e["response"]["model"] == "native" for e in events if "response" in e)
    ((_, op, sent),) = adapter.calls
    assert op is Operation.RESPONSES and sent["stream"] is True
    assert sent["stream_options"] == {"include_obfuscation": False}
    assert stream.usage == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert stream.finish_reasons == ["completed"]


async def test_an_error_event_mid_stream_raises(router, adapter):
    adapter.events = response_events(error=True)
    stream = await router.responses_stream(body(), untranslatable)
    with pytest.raises(UpstreamError):
        _ = [event async for event in stream]
    assert stream.usage is not None and stream.usage_estimated  # metered all the same


async def test_an_error_as_the_first_event_fails_the_attempt_so_it_falls_back(router, adapter):
    adapter.events = [{"type": "error", "sequence_number": 0, "code": "server_error", "message": "boom"}]
    stream = await router.responses_stream(body(), chat_of("plain"))
    assert stream.wire == "chat" and stream.served_by.model == "plain"
    assert [(d, op) for d, op, _ in adapter.calls] == [
        ("native-1", Operation.RESPONSES),
        ("plain-1", Operation.CHAT),
    ]


async def test_a_stream_without_its_closing_event_is_cut_short(router, adapter):
    adapter.events = response_events(close=False)
    stream = await router.responses_stream(body(), untranslatable)
    with pytest.raises(UpstreamError, match="ended the stream"):
        _ = [event async for event in stream]


async def test_a_stream_on_a_chat_deployment_is_chat_chunks(router, adapter):
    stream = await router.responses_stream(body("plain"), chat_of("plain"))
    assert stream.wire == "chat"
    chunks = [chunk async for chunk in stream]
    assert chunks[-1]["usage"]  # the usage chunk stays: the service meters and translates it
    ((_, op, sent),) = adapter.calls
    assert op is Operation.CHAT and sent["stream_options"] == {"include_usage": True}


# --- the body that goes upstream ------------------------------------------------------------------


def create(**fields: Any) -> ResponseCreate:
    return validate_body(ResponseCreate, {"model": "native", "input": "Hi", **fields})


def test_cirrus_state_stays_out_of_the_upstream_body():
    request = create(
        metadata={"team": "a"},
        client_metadata={"turn": "1"},
        store=True,
        instructions="Be brief.",
        temperature=0.2,
        text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
    )
    sent = passthrough.native_body(request, [])
    assert sent == {
        "model": "native",
        "input": "Hi",
        "instructions": "Be brief.",
        "temperature": 0.2,
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        "store": False,
        "truncation": "auto",
    }
    assert passthrough.native_body(create(truncation="disabled"), [])["truncation"] == "disabled"
    assert "stream_options" not in passthrough.native_body(create(stream_options={"x": 1}), [])


def test_a_continued_conversation_is_sent_whole_without_item_ids():
    history = [
        {"type": "message", "id": "msg_a", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},  # only the provider could read it back
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "opaque"},
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "id": "fco_1", "call_id": "c1", "output": "42"},
    ]
    sent = passthrough.native_body(create(input="And then?", previous_response_id="resp_x"), history)
    assert "previous_response_id" not in sent
    assert sent["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "opaque"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
        {"role": "user", "content": "And then?"},
    ]


def test_the_client_sees_cirrus_ids_and_its_own_settings():
    request = create(metadata={"k": "v"}, previous_response_id="resp_prev")
    record = ResponseRecord(
        id="resp_cirrus",
        pk="resp_cirrus",
        owner="key",
        model="native",
        status="in_progress",
        created_at=1,
        request={},
    )
    shown = passthrough.presented({**response_body(), "store": False, "metadata": {}}, record, request)
    assert shown["id"] == "resp_cirrus" and shown["model"] == "native"
    assert shown["store"] is True and shown["previous_response_id"] == "resp_prev"
    assert shown["metadata"] == {"k": "v"} and shown["output"] == response_body()["output"]


def test_a_failure_mid_stream_ends_with_the_output_so_far():
    request = create(stream=True)
    record = ResponseRecord(
        id="resp_c", pk="resp_c", owner="key", model="native", status="in_progress", created_at=1, request={}
    )
    native = passthrough.NativeEvents(record, request)
    native.present({"type": "response.created", "sequence_number": 0, "response": response_body()})
    item = {"type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress", "content": []}
    native.present(
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": item}
    )
    error, failed = native.fail("server_error", "boom")
    assert error == {
        "type": "error",
        "sequence_number": 2,
        "code": "server_error",
        "message": "boom",
        "param": None,
    }
    assert failed["type"] == "response.failed" and failed["sequence_number"] == 3
    response = failed["response"]
    assert response["id"] == "resp_c" and response["status"] == "failed" and "usage" not in response
    assert response["output"] == [{**item, "status": "incomplete"}]


def test_a_deployments_chat_defaults_are_renamed_for_responses():
    table = read_routing(
        ModelConfig.model_validate(
            {
                "model_list": [
                    entry(
                        "a",
                        "a-1",
                        info=NATIVE,
                        temperature=0.1,
                        max_tokens=99,
                        seed=7,
                        stop=["x"],
                        reasoning_effort="low",
                        verbosity="high",
                    )
                ]
            }
        ),
        environ={},
    )
    (deployment,) = table.deployments
    assert _address(deployment, Operation.RESPONSES).defaults == {
        "temperature": 0.1,
        "max_output_tokens": 99,
        "reasoning": {"effort": "low"},
        "text": {"verbosity": "high"},
    }
    assert _address(deployment, Operation.CHAT).defaults["seed"] == 7  # chat keeps its own names
