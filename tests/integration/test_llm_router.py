"""Cirrus's router against the fake provider over real HTTP: shapes, pass-through, error mapping,
disconnects and cancellation. Every test runs through both adapters (see routers.py), and both must
give the same observable results."""

import asyncio

import pytest

from shared.errors import InvalidRequestError, UpstreamError, UpstreamRateLimitError, UpstreamTimeoutError
from tests.factories import message
from tests.integration.routers import ADAPTERS, build_router, deployment, text_of, upstream_requests
from tests.openapi import assert_matches


def deployments(base):
    return [
        deployment("ok", base, id_="ok-1"),
        deployment("ratelimited", base, "fault=429,retry_after=4"),
        deployment("broken", base, "fault=500"),
        deployment("slow", base, "fault=timeout", timeout=1, stream_timeout=1),
        deployment("reset", base, "fault=reset"),
        deployment("cut", base, "fault=cut,cut_after=2,chunk_delay_ms=10"),
        deployment("bad-request", base, "fault=status,status=400"),
        deployment("dribble", base, "chunk_delay_ms=200"),
    ]


@pytest.fixture(params=ADAPTERS)
async def router(request, fake_provider_url):
    gateway = build_router(request.param, deployments(fake_provider_url))
    yield gateway
    await gateway.aclose()


def params(model="ok", **extra):
    return {"model": model, "messages": [message("Tell me about clouds")], **extra}


async def test_completion_is_openai_shaped_and_names_its_deployment(router, provider):
    result = await router.chat(params())
    body = result.body
    assert_matches("CreateChatCompletionResponse", body)
    assert body["model"] == "ok"
    assert body["choices"][0]["message"]["content"]
    assert result.served_by.deployment == "ok-1"
    assert result.served_by.provider == "openai"
    assert result.usage["total_tokens"] > 0 and not result.usage_estimated


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
    assert body["model"] == "gpt-4o-mini"  # the deployment's model, not the public name
    assert sent["headers"].get("Authorization", sent["headers"].get("authorization")) == "Bearer fake"


async def test_stream_chunks_are_openai_shaped_and_usage_is_always_collected(router, provider):
    stream = await router.chat_stream(params(stream=True))
    chunks = [chunk async for chunk in stream]
    for chunk in chunks:
        assert_matches("CreateChatCompletionStreamResponse", chunk)
        assert "usage" not in chunk  # the client did not ask for it
        assert chunk["model"] == "ok"
    assert stream.usage is not None and stream.usage["completion_tokens"] > 0
    assert stream.finish_reasons == ["stop"]
    (sent,) = upstream_requests(provider)
    assert sent["body"]["stream_options"] == {"include_usage": True}


async def test_stream_forwards_the_usage_chunk_when_the_client_asks(router):
    stream = await router.chat_stream(params(stream=True, stream_options={"include_usage": True}))
    chunks = [chunk async for chunk in stream]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_streamed_text_equals_the_complete_answer(router):
    complete = await router.chat(params())
    stream = await router.chat_stream(params(stream=True))
    text = text_of([c async for c in stream])
    assert text == complete.body["choices"][0]["message"]["content"]


async def test_tool_calls_come_back_json_and_streamed(router, provider):
    call = {"name": "get_weather", "arguments": {"city": "Oslo"}}
    provider.post(
        "/_control/enqueue", json={"behaviour": {"tool_calls": [call]}, "times": 2}
    ).raise_for_status()
    result = await router.chat(params(tools=[{"type": "function", "function": {"name": "get_weather"}}]))
    (tool_call,) = result.body["choices"][0]["message"]["tool_calls"]
    assert tool_call["function"]["name"] == "get_weather"
    assert tool_call["function"]["arguments"].replace(" ", "") == '{"city":"Oslo"}'
    assert result.body["choices"][0]["finish_reason"] == "tool_calls"

    stream = await router.chat_stream(
        params(stream=True, tools=[{"type": "function", "function": {"name": "get_weather"}}])
    )
    arguments, names = "", []
    async for chunk in stream:
        for choice in chunk["choices"]:
            for delta in choice["delta"].get("tool_calls") or []:
                function = delta.get("function") or {}
                names += [function["name"]] if function.get("name") else []
                arguments += function.get("arguments") or ""
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


async def test_a_client_that_goes_away_mid_stream_closes_the_upstream_connection(router, provider):
    stream = await router.chat_stream(params("dribble", stream=True))
    chunks = aiter(stream)
    await anext(chunks)
    await chunks.aclose()  # what the HTTP layer does when the client disconnects
    await stream.aclose()
    for _ in range(50):  # the fake notices the closed connection at its next write
        (record,) = upstream_requests(provider)
        if record["finished_at"]:
            break
        await asyncio.sleep(0.1)
    assert record["finished_at"] and record["status"] == 200
    assert record["finished_at"] - record["received_at"] < 3  # 26 chunks at 200 ms would take 5 s
    # The router's books are straight: nothing in flight, and the deployment took no blame.
    health = router.health("dribble-chunk_delay_ms=200")
    assert health.in_flight == 0 and health.failures == 0


async def test_a_cancelled_call_releases_its_deployment(router, provider):
    task = asyncio.ensure_future(router.chat(params("slow")))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    health = router.health("slow-fault=timeout")
    assert health.in_flight == 0 and health.failures == 0


async def test_both_adapters_give_the_same_observable_results(fake_provider_url, provider):
    """The same requests through each adapter: answers, usage, finish reasons and errors match."""
    observed = {}
    for adapter in ADAPTERS:
        gateway = build_router(adapter, deployments(fake_provider_url))
        try:
            complete = await gateway.chat(params(seed=3))
            stream = await gateway.chat_stream(
                params(seed=3, stream=True, stream_options={"include_usage": True})
            )
            chunks = [c async for c in stream]
            text = await gateway.text_completion({"model": "ok", "prompt": "Say hi", "max_tokens": 5})
            embedded = await gateway.embed({"model": "ok", "input": ["a"]})
            errors = []
            for model in ("ratelimited", "broken", "slow", "reset", "bad-request"):
                try:
                    await gateway.chat(params(model))
                except Exception as exc:  # the error is what is compared
                    errors.append((type(exc).__name__, exc.status, exc.code, exc.headers()))
            observed[adapter] = {
                "content": complete.body["choices"][0]["message"]["content"],
                "usage": {
                    k: complete.usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")
                },
                "finish": complete.finish_reasons,
                "streamed": text_of(chunks),
                "stream_usage": {k: chunks[-1]["usage"][k] for k in ("prompt_tokens", "completion_tokens")},
                "stream_finish": stream.finish_reasons,
                "chunk_keys": sorted({k for c in chunks for k in c}),
                "text": text.body["choices"][0]["text"],
                "vector": embedded.body["data"][0]["embedding"],
                "embed_tokens": embedded.input_tokens,
                "errors": errors,
                "served_by": complete.served_by,
            }
        finally:
            await gateway.aclose()
    native, litellm = observed["native"], observed["litellm"]
    assert native == litellm, {k: (native[k], litellm[k]) for k in native if native[k] != litellm[k]}
