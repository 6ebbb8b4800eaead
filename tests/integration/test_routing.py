"""Routing and failover through Cirrus's router, configured from a model file, against the fake
provider over real HTTP: the same suite through both adapters (see routers.py)."""

import base64
import struct

import pytest

from shared.errors import UpstreamError
from tests.factories import message
from tests.integration.routers import ADAPTERS, build_router, deployment, text_of
from tests.integration.routers import upstream_requests as _requests
from tests.openapi import assert_matches


@pytest.fixture(params=ADAPTERS)
async def router(request):
    """Builds a router whose deployments all go through one adapter; each test runs with both."""
    built = []

    def build(deployments, **settings):
        built.append(build_router(request.param, deployments, **settings))
        return built[-1]

    yield build
    for gateway in built:
        await gateway.aclose()


def hits(provider, fragment):
    return _requests(provider, fragment)


def chat(model="primary", **extra):
    return {"model": model, "messages": [message("Route me")], **extra}


FAULTS = ["fault=429,retry_after=0", "fault=500", "fault=timeout", "fault=reset"]


@pytest.mark.parametrize("fault", FAULTS)
async def test_failure_before_the_answer_falls_back_to_another_model(
    fake_provider_url, provider, router, fault
):
    gateway = router(
        [deployment("primary", fake_provider_url, fault, timeout=1), deployment("backup", fake_provider_url)],
        fallbacks=[{"primary": ["backup"]}],
    )
    result = await gateway.chat(chat())
    assert result.served_by.model == "backup"
    assert result.served_by.fallbacks == 1
    assert result.body["model"] == "backup"
    assert len(hits(provider, fault.split(",")[0])) == 1


@pytest.mark.parametrize("fault", [*FAULTS, "fault=cut,cut_after=0"])
async def test_a_stream_failing_before_its_first_chunk_falls_back_invisibly(
    fake_provider_url, provider, router, fault
):
    gateway = router(
        [
            deployment("primary", fake_provider_url, fault, timeout=1, stream_timeout=1),
            deployment("backup", fake_provider_url),
        ],
        fallbacks=[{"primary": ["backup"]}],
    )
    stream = await gateway.chat_stream(chat(stream=True))
    chunks = [chunk async for chunk in stream]
    assert stream.served_by.model == "backup"
    assert text_of(chunks).startswith("Fake reply")
    for chunk in chunks:
        assert_matches("CreateChatCompletionStreamResponse", chunk)


async def test_a_stream_cut_after_its_first_chunk_is_an_error_not_a_fallback(fake_provider_url, router):
    gateway = router(
        [
            deployment("primary", fake_provider_url, "fault=cut,cut_after=3"),
            deployment("backup", fake_provider_url),
        ],
        fallbacks=[{"primary": ["backup"]}],
    )
    stream = await gateway.chat_stream(chat(stream=True))
    received = []
    with pytest.raises(UpstreamError):
        async for chunk in stream:
            received.append(chunk)
    assert received and stream.served_by.model == "primary"


async def test_a_failing_deployment_is_cooled_down_and_its_twin_serves(fake_provider_url, provider, router):
    gateway = router(
        [
            deployment("pair", fake_provider_url, "fault=500", id_="pair-bad"),
            deployment("pair", fake_provider_url, id_="pair-good"),
        ],
        num_retries=2,
        allowed_fails=0,
        cooldown_time=60,
    )
    served = [(await gateway.chat(chat("pair"))).served_by.deployment for _ in range(12)]
    assert set(served) == {"pair-good"}
    # However the shuffle fell, the bad deployment was tried at most once before its cooldown.
    assert len(hits(provider, "fault=500")) <= 1


async def test_context_window_overflow_falls_back_to_a_larger_model(fake_provider_url, provider, router):
    gateway = router(
        [deployment("tiny", fake_provider_url, "context_window=3"), deployment("big", fake_provider_url)],
        context_window_fallbacks=[{"tiny": ["big"]}],
    )
    short = await gateway.chat({"model": "tiny", "messages": [message("hi")]})
    assert short.served_by.model == "tiny"
    long = await gateway.chat({"model": "tiny", "messages": [message("far too many words for tiny")]})
    assert long.served_by.model == "big" and long.served_by.fallbacks == 1


async def test_a_content_policy_refusal_falls_back_to_another_model(fake_provider_url, router):
    gateway = router(
        [
            deployment("strict", fake_provider_url, "status=400,error_message=content_policy_violation"),
            deployment("lenient", fake_provider_url),
        ],
        content_policy_fallbacks=[{"strict": ["lenient"]}],
    )
    result = await gateway.chat(chat("strict"))
    assert result.served_by.model == "lenient" and result.served_by.fallbacks == 1


async def test_retries_wait_for_the_providers_retry_after(fake_provider_url, provider, router):
    gateway = router(
        [deployment("flaky", fake_provider_url, "fail_first=1,fault=429,retry_after=1")], num_retries=1
    )
    result = await gateway.chat(chat("flaky"))
    assert result.served_by.retries == 1
    first, second = hits(provider, "fail_first")
    assert second["received_at"] - first["received_at"] >= 0.9  # the provider asked for one second


async def test_weights_steer_the_shuffle(fake_provider_url, router):
    gateway = router(
        [
            deployment("weighted", fake_provider_url, id_="w-all", weight=1),
            deployment("weighted", fake_provider_url, id_="w-none", weight=0),
        ]
    )
    served = {(await gateway.chat(chat("weighted"))).served_by.deployment for _ in range(20)}
    assert served == {"w-all"}


async def test_latency_based_routing_prefers_the_faster_deployment(fake_provider_url, provider, router):
    gateway = router(
        [
            deployment("lb", fake_provider_url, "latency_ms=150", id_="lb-slow"),
            deployment("lb", fake_provider_url, "latency_ms=0", id_="lb-fast"),
        ],
        routing_strategy="latency-based-routing",
    )
    for _ in range(6):  # both get measured
        await gateway.chat(chat("lb"))
    served = [(await gateway.chat(chat("lb"))).served_by.deployment for _ in range(6)]
    assert served.count("lb-fast") >= 5


async def test_costs_use_the_files_prices_when_given_else_litellms(fake_provider_url, router):
    gateway = router(
        [
            deployment("priced", fake_provider_url, input_cost_per_token=0.001, output_cost_per_token=0.002),
            deployment("listed", fake_provider_url),
        ]
    )
    priced = await gateway.chat(chat("priced"))
    usage = priced.usage
    assert gateway.cost_usd(
        priced.served_by, usage["prompt_tokens"], usage["completion_tokens"]
    ) == pytest.approx(usage["prompt_tokens"] * 0.001 + usage["completion_tokens"] * 0.002)
    listed = await gateway.chat(chat("listed"))
    # gpt-4o-mini in LiteLLM's price map: $0.15 / $0.60 per million tokens.
    assert gateway.cost_usd(listed.served_by, 1_000_000, 1_000_000) == pytest.approx(0.75)


async def test_streams_without_provider_usage_are_counted(fake_provider_url, router):
    gateway = router([deployment("quiet", fake_provider_url, "omit_usage=true")])
    stream = await gateway.chat_stream(chat("quiet", stream=True))
    [chunk async for chunk in stream]
    # Cirrus counts a stream the provider did not.
    assert stream.usage["prompt_tokens"] > 0 and stream.usage["completion_tokens"] > 0
    result = await gateway.chat(chat("quiet"))
    assert result.usage["prompt_tokens"] > 0 and result.usage["completion_tokens"] > 0


async def test_embeddings_float_and_base64(fake_provider_url, provider, router):
    gateway = router([deployment("embed", fake_provider_url)])
    floats = await gateway.embed({"model": "embed", "input": ["a", "b"]})
    body = floats.body
    assert_matches("CreateEmbeddingResponse", body)
    assert [d["index"] for d in body["data"]] == [0, 1] and body["model"] == "embed"
    packed = await gateway.embed({"model": "embed", "input": ["a", "b"], "encoding_format": "base64"})
    raw = base64.b64decode(packed.body["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(body["data"][0]["embedding"])
    assert "encoding_format" not in hits(provider, "/v1/embeddings")[-1]["body"]


async def test_text_completions_json_and_stream(fake_provider_url, router):
    gateway = router([deployment("legacy", fake_provider_url)])
    result = await gateway.text_completion(
        {"model": "legacy", "prompt": "Say this is a test", "max_tokens": 7}
    )
    body = result.body
    assert_matches("CreateCompletionResponse", body)
    assert body["object"] == "text_completion" and body["choices"][0]["text"]
    stream = await gateway.text_completion_stream(
        {"model": "legacy", "prompt": "Say this is a test", "max_tokens": 7}
    )
    text = text_of([c async for c in stream])
    assert text == body["choices"][0]["text"]
    assert stream.usage is not None
