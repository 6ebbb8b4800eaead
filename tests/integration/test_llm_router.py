"""LiteLLMRouter against the fake provider over real HTTP: shapes, pass-through, error mapping."""

import httpx
import pytest

from shared.clients.llm_router import LiteLLMRouter
from shared.config import ModelConfig
from shared.errors import InvalidRequestError, UpstreamError, UpstreamRateLimitError, UpstreamTimeoutError
from tests.factories import message
from tests.openapi import assert_matches


def deployment(name, base, profile="", **params):
    api_base = f"{base}/profile/{profile}/v1" if profile else f"{base}/v1"
    return {
        "model_name": name,
        "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": api_base, "api_key": "fake", **params},
        "model_info": {"id": f"{name}-1"},
    }


@pytest.fixture(scope="module")
def router(fake_provider_url):
    base = fake_provider_url
    config = ModelConfig.model_validate(
        {
            "model_list": [
                deployment("ok", base),
                deployment("ratelimited", base, "fault=429,retry_after=4"),
                deployment("broken", base, "fault=500"),
                deployment("slow", base, "fault=timeout", timeout=1, stream_timeout=1),
                deployment("reset", base, "fault=reset"),
                deployment("cut", base, "fault=cut,cut_after=2,chunk_delay_ms=10"),
                deployment("bad-request", base, "fault=status,status=400"),
            ],
            "router_settings": {"num_retries": 0},
        }
    )
    return LiteLLMRouter(config)


@pytest.fixture
def provider(fake_provider_url):
    """Control API of the fake provider, reset before each test."""
    client = httpx.Client(base_url=fake_provider_url)
    client.post("/_control/reset").raise_for_status()
    yield client
    client.close()


def upstream_requests(provider):
    return provider.get("/_control/requests").json()


def params(model="ok", **extra):
    return {"model": model, "messages": [message("Tell me about clouds")], **extra}


async def test_completion_is_openai_shaped_and_names_its_deployment(router, provider):
    result = await router.chat(params())
    body = result.completion.model_dump(mode="json", exclude_unset=True)
    assert_matches("CreateChatCompletionResponse", body)
    assert body["model"] == "ok"
    assert body["choices"][0]["message"]["content"]
    assert result.served_by.deployment == "ok-1"
    assert result.served_by.provider == "openai"
    assert result.completion.usage.total_tokens > 0


async def test_client_parameters_reach_the_provider(router, provider):
    tools = [
        {
            "type": "function",
            "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    await router.chat(
        params(
            tools=tools,
            tool_choice="auto",
            response_format={"type": "json_object"},
            temperature=0.3,
            max_tokens=50,
            stop=["\n\n"],
            n=2,
            seed=11,
            user="user-7",
        )
    )
    (sent,) = upstream_requests(provider)
    body = sent["body"]
    assert body["tools"] == tools
    assert {
        k: body[k]
        for k in ("tool_choice", "response_format", "temperature", "max_tokens", "stop", "n", "seed", "user")
    } == {
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "temperature": 0.3,
        "max_tokens": 50,
        "stop": ["\n\n"],
        "n": 2,
        "seed": 11,
        "user": "user-7",
    }
    assert sent["headers"].get("Authorization", sent["headers"].get("authorization")) == "Bearer fake"


async def test_stream_chunks_are_openai_shaped_and_usage_is_always_collected(router, provider):
    stream = await router.chat_stream(params(stream=True))
    chunks = [chunk.model_dump(mode="json", exclude_unset=True) async for chunk in stream]
    for chunk in chunks:
        assert_matches("CreateChatCompletionStreamResponse", chunk)
        assert "usage" not in chunk  # the client did not ask for it
    assert stream.usage is not None and stream.usage.completion_tokens > 0
    assert stream.finish_reasons == ["stop"]
    (sent,) = upstream_requests(provider)
    assert sent["body"]["stream_options"] == {"include_usage": True}


async def test_stream_forwards_the_usage_chunk_when_the_client_asks(router):
    stream = await router.chat_stream(params(stream=True, stream_options={"include_usage": True}))
    chunks = [chunk.model_dump(mode="json", exclude_unset=True) async for chunk in stream]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_streamed_text_equals_the_complete_answer(router):
    complete = await router.chat(params())
    stream = await router.chat_stream(params(stream=True))
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == complete.completion.choices[0].message.content


async def test_tool_calls_come_back_json_and_streamed(router, provider):
    call = {"name": "get_weather", "arguments": {"city": "Oslo"}}
    provider.post(
        "/_control/enqueue", json={"behaviour": {"tool_calls": [call]}, "times": 2}
    ).raise_for_status()
    result = await router.chat(params(tools=[{"type": "function", "function": {"name": "get_weather"}}]))
    (tool_call,) = result.completion.choices[0].message.tool_calls
    assert tool_call.function.name == "get_weather"
    assert tool_call.function.arguments.replace(" ", "") == '{"city":"Oslo"}'
    assert result.completion.choices[0].finish_reason == "tool_calls"

    stream = await router.chat_stream(
        params(stream=True, tools=[{"type": "function", "function": {"name": "get_weather"}}])
    )
    arguments, names = "", []
    async for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                names += [delta.function.name] if delta.function and delta.function.name else []
                arguments += (delta.function.arguments or "") if delta.function else ""
    assert names == ["get_weather"]
    assert arguments.replace(" ", "") == '{"city":"Oslo"}'
    assert stream.finish_reasons == ["tool_calls"]


async def test_provider_429_keeps_its_retry_after(router):
    with pytest.raises(UpstreamRateLimitError) as info:
        await router.chat(params("ratelimited"))
    assert info.value.status == 429
    assert info.value.headers() == {"retry-after": "4"}


async def test_provider_5xx_is_a_502(router):
    with pytest.raises(UpstreamError) as info:
        await router.chat(params("broken"))
    assert info.value.status == 502


async def test_provider_400_is_the_clients_400_with_the_providers_words(router):
    with pytest.raises(InvalidRequestError) as info:
        await router.chat(params("bad-request"))
    assert info.value.status == 400
    assert "litellm" not in info.value.message.lower()


async def test_provider_timeout_is_a_504(router):
    with pytest.raises(UpstreamTimeoutError) as info:
        await router.chat(params("slow"))
    assert info.value.status == 504


async def test_connection_reset_is_a_502(router):
    with pytest.raises(UpstreamError) as info:
        await router.chat(params("reset"))
    assert info.value.status == 502


async def test_a_stream_cut_mid_way_raises_instead_of_ending_quietly(router):
    stream = await router.chat_stream(params("cut", stream=True))
    received = []
    with pytest.raises(UpstreamError):
        async for chunk in stream:
            received.append(chunk)
    assert received  # the cut came after the first chunks, not before
