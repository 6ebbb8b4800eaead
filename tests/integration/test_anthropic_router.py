"""Cirrus's router serving Anthropic's Messages API against the fake provider over real HTTP:
Anthropic deployments natively (anthropic_wire), every other deployment through its chat
translation, retries and fallbacks across both, and LiteLLM still serving Anthropic deployments
that ask for it."""

import anthropic.types
import pytest

from shared.clients.llm import ModelRouter
from shared.config import ModelConfig
from shared.errors import InvalidRequestError, UpstreamError, UpstreamRateLimitError
from tests.factories import message
from tests.integration.routers import deployment, upstream_requests

CHAT_OF_BODY = {"model": "?", "messages": [message("Tell me about clouds")], "max_tokens": 50}


def claude(name, base, profile="", **params):
    api_base = f"{base}/profile/{profile}" if profile else base
    return {
        "model_name": name,
        "litellm_params": {
            "model": "anthropic/claude-sonnet-4-5",
            "api_base": api_base,
            "api_key": "fake",
            **params,
        },
        "model_info": {"id": f"{name}-1"},
    }


@pytest.fixture
async def router(fake_provider_url):
    base = fake_provider_url
    gateway = ModelRouter(
        ModelConfig.model_validate(
            {
                "model_list": [
                    claude("claude", base),
                    claude("claude-v1-base", f"{base}/v1"),  # the OpenAI-style api_base works too
                    claude("claude-broken", base, "fault=500"),
                    claude("claude-limited", base, "fault=429,retry_after=4"),
                    claude("claude-cut", base, "fault=cut,cut_after=3,chunk_delay_ms=10"),
                    claude("claude-refusing", base, "status=400,error_message=prompt is too long: 9 tokens"),
                    deployment("gpt", base, id_="gpt-1"),
                ],
                "router_settings": {"num_retries": 0, "fallbacks": [{"claude-broken": ["gpt"]}]},
            }
        )
    )
    yield gateway
    await gateway.aclose()


def body(model="claude", **extra):
    return {"model": model, "max_tokens": 50, "messages": [message("Tell me about clouds")], **extra}


def translation(model="gpt"):
    return lambda: {**CHAT_OF_BODY, "model": model}


def untranslatable():
    raise InvalidRequestError(
        "tools: `web_search_20250305` is one of Anthropic's server tools.", param="tools"
    )


async def test_an_anthropic_deployment_gets_the_request_as_it_is(router, provider, spans):
    result = await router.messages(body(system="Be brief.", top_k=5), untranslatable, beta="tools-2024-04-04")
    assert result.wire == "anthropic"
    message_ = anthropic.types.Message.model_validate(result.body)
    assert message_.model == "claude" and message_.content[0].text.startswith("Fake reply to: Tell me")
    assert result.served_by.deployment == "claude-1" and result.served_by.provider == "anthropic"
    usage = message_.usage
    assert result.usage == {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }
    assert result.finish_reasons == ["end_turn"]
    (sent,) = upstream_requests(provider, "/v1/messages")
    assert sent["path"] == "/v1/messages"
    assert sent["body"] == {**body(system="Be brief.", top_k=5), "model": "claude-sonnet-4-5"}
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["x-api-key"] == "fake" and headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "tools-2024-04-04" and "authorization" not in headers
    (span,) = [s for s in spans.get_finished_spans() if s.name == "provider anthropic"]
    assert span.attributes["cirrus.adapter"] == "anthropic_wire"
    assert span.attributes["gen_ai.operation.name"] == "chat"


async def test_an_api_base_with_v1_reaches_the_same_endpoint(router, provider):
    assert (await router.messages(body("claude-v1-base"), untranslatable)).wire == "anthropic"
    assert [r["path"] for r in upstream_requests(provider)] == ["/v1/messages"]


async def test_a_stream_is_relayed_event_by_event(router, provider):
    stream = await router.messages_stream(body(), untranslatable)
    assert stream.wire == "anthropic"
    events = [event async for event in stream]
    assert [e["type"] for e in events][:3] == ["message_start", "content_block_start", "ping"]
    assert events[-1] == {"type": "message_stop"}
    assert events[0]["message"]["model"] == "claude"  # the public name, as in a JSON answer
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text.startswith("Fake reply to: Tell me about clouds")
    assert stream.finish_reasons == ["end_turn"]
    assert stream.usage["completion_tokens"] == 24 and stream.usage["prompt_tokens"] == 4
    assert not stream.usage_estimated
    (sent,) = upstream_requests(provider)
    assert sent["body"]["stream"] is True


async def test_tool_use_comes_back_json_and_streamed(router, provider):
    call = {"name": "get_weather", "arguments": {"city": "Oslo"}}
    provider.post(
        "/_control/enqueue", json={"behaviour": {"tool_calls": [call]}, "times": 2}
    ).raise_for_status()
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    result = await router.messages(body(tools=tools), untranslatable)
    (block,) = result.body["content"]
    assert (block["type"], block["name"], block["input"]) == ("tool_use", "get_weather", {"city": "Oslo"})
    assert result.finish_reasons == ["tool_use"]
    stream = await router.messages_stream(body(tools=tools), untranslatable)
    deltas = [e["delta"]["partial_json"] async for e in stream if e["type"] == "content_block_delta"]
    assert "".join(deltas).replace(" ", "") == '{"city":"Oslo"}'


async def test_provider_errors_map_like_openai_wire_ones(router):
    with pytest.raises(UpstreamRateLimitError) as info:
        await router.messages(body("claude-limited"), untranslatable)
    assert info.value.headers() == {"retry-after": "4"}
    with pytest.raises(UpstreamError):
        await router.messages_stream(body("claude-limited"), untranslatable)
    with pytest.raises(InvalidRequestError) as refused:
        await router.messages(body("claude-refusing"), untranslatable)
    assert refused.value.code == "context_length_exceeded"  # falls back like a chat's would


async def test_a_failing_anthropic_deployment_falls_back_to_a_chat_model(router, provider):
    result = await router.messages(body("claude-broken"), translation())
    assert result.wire == "chat" and result.served_by.model == "gpt" and result.served_by.fallbacks == 1
    assert result.body["object"] == "chat.completion" and result.body["model"] == "gpt"
    assert result.usage["total_tokens"] > 0 and result.finish_reasons == ["stop"]
    stream = await router.messages_stream(body("claude-broken"), translation())
    assert stream.wire == "chat"
    chunks = [chunk async for chunk in stream]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0  # for message_delta
    (chat_request,) = upstream_requests(provider, "/chat/completions")[1:]
    assert chat_request["body"]["stream_options"] == {"include_usage": True}


async def test_a_request_no_chat_model_can_serve_never_reaches_one(router, provider):
    with pytest.raises(UpstreamError):  # the error of the model asked for
        await router.messages(body("claude-broken"), untranslatable)
    assert upstream_requests(provider, "/chat/completions") == []


async def test_a_stream_cut_after_its_first_event_fails_for_the_reader(router):
    stream = await router.messages_stream(body("claude-cut"), untranslatable)
    seen = []
    with pytest.raises(UpstreamError, match="ended the stream"):
        async for event in stream:
            seen.append(event["type"])
    assert seen == ["message_start", "content_block_start", "ping"]
    assert stream.usage_estimated and stream.usage["prompt_tokens"] == 4  # from message_start


async def test_chat_models_only_translate(router, provider):
    assert router.serves_messages("claude") and not router.serves_messages("gpt")
    result = await router.messages(body("gpt"), translation())
    assert result.wire == "chat" and result.served_by.fallbacks == 0
    assert upstream_requests(provider, "/v1/messages") == []


async def test_litellm_still_serves_anthropic_deployments_that_ask_for_it(fake_provider_url, provider):
    entry = claude("claude-litellm", fake_provider_url)
    entry["model_info"]["adapter"] = "litellm"
    gateway = ModelRouter(
        ModelConfig.model_validate({"model_list": [entry], "router_settings": {"num_retries": 0}})
    )
    try:
        assert not gateway.serves_messages("claude-litellm")
        result = await gateway.chat(
            {"model": "claude-litellm", "messages": [message("Hi there")], "max_tokens": 40}
        )
        assert result.body["choices"][0]["message"]["content"].startswith("Fake reply to: Hi there")
        assert result.usage["prompt_tokens"] == 2 and not result.usage_estimated
        stream = await gateway.chat_stream(
            {"model": "claude-litellm", "messages": [message("Hi there")], "max_tokens": 40}
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text == result.body["choices"][0]["message"]["content"]
    finally:
        await gateway.aclose()
    sent = upstream_requests(provider, "/v1/messages")
    assert len(sent) == 2 and sent[0]["body"]["model"] == "claude-sonnet-4-5"  # Anthropic's wire, via LiteLLM
