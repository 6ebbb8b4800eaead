"""Cirrus's router passing Responses through to the fake provider over real HTTP: OpenAI's URL and
Azure's (per resource, the deployment as `model`), JSON and streams, a retry of a failing native
attempt, and the chat translation for deployments the model file does not flag."""

import pytest

from shared.clients.llm import ModelRouter
from shared.config import ModelConfig
from tests.factories import message
from tests.integration.routers import deployment, upstream_requests
from tests.openapi import assert_matches

NATIVE = {"supported_endpoints": ["/v1/responses"]}


def flagged(entry):
    entry["model_info"].update(NATIVE)
    return entry


def azure(name, base, version):
    return {
        "model_name": name,
        "litellm_params": {
            "model": "azure/my-gpt",
            "api_base": base,
            "api_key": "azure-key",
            "api_version": version,
        },
        "model_info": {"id": f"{name}-1", **NATIVE},
    }


@pytest.fixture
async def router(fake_provider_url):
    base = fake_provider_url
    gateway = ModelRouter(
        ModelConfig.model_validate(
            {
                "model_list": [
                    flagged(deployment("native", base, id_="native-1")),
                    flagged(deployment("flaky", base, "fail_first=1", id_="flaky-1")),
                    deployment("plain", base, id_="plain-1"),
                    azure("azure-dated", base, "2025-04-01-preview"),
                    azure("azure-v1", f"{base}/openai/v1", "v1"),
                ],
                "router_settings": {"num_retries": 1},
            }
        )
    )
    yield gateway
    await gateway.aclose()


def body(model, **extra):
    return {"model": model, "input": "Tell me about clouds", "store": False, **extra}


def translation(model):
    return lambda: {"model": model, "messages": [message("Tell me about clouds")]}


async def test_a_flagged_deployment_answers_from_its_own_responses(router, provider):
    result = await router.responses(body("native"), translation("native"))
    assert result.wire == "responses" and result.body["model"] == "native"
    assert_matches("Response", result.body)
    (sent,) = upstream_requests(provider)
    assert sent["path"] == "/v1/responses" and sent["body"]["model"] == "gpt-4o-mini"
    assert result.usage["prompt_tokens"] == result.body["usage"]["input_tokens"] > 0


async def test_a_native_stream_arrives_event_by_event(router, provider):
    stream = await router.responses_stream(body("native"), translation("native"))
    events = [event async for event in stream]
    for event in events:
        assert_matches("ResponseStreamEvent", event)
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["model"] == "native"
    assert stream.usage["completion_tokens"] == events[-1]["response"]["usage"]["output_tokens"]


@pytest.mark.parametrize(
    ("model", "path", "version"),
    [
        ("azure-dated", "/openai/responses", "2025-04-01-preview"),
        ("azure-v1", "/openai/v1/responses", None),
    ],
)
async def test_azure_is_addressed_per_resource(router, provider, model, path, version):
    result = await router.responses(body(model), translation(model))
    assert result.wire == "responses" and result.served_by.provider == "azure"
    (sent,) = upstream_requests(provider)
    assert (sent["path"], sent["api_version"]) == (path, version)
    assert sent["body"]["model"] == "my-gpt" and sent["headers"]["api-key"] == "azure-key"


async def test_a_failing_native_attempt_is_retried(router, provider):
    result = await router.responses(body("flaky"), translation("flaky"))
    assert result.wire == "responses" and result.served_by.retries == 1
    assert [r["status"] for r in upstream_requests(provider, "/responses")] == [500, 200]


async def test_an_unflagged_deployment_gets_the_chat_translation(router, provider):
    result = await router.responses(body("plain"), translation("plain"))
    assert result.wire == "chat"
    (sent,) = upstream_requests(provider)
    assert sent["path"] == "/v1/chat/completions"
