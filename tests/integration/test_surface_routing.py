"""Moderations, images, audio and rerank through Cirrus's router, against the fake provider over
real HTTP: the same suite through both adapters (see routers.py), with the routing semantics of
chat (retries, fallbacks, cooldowns, attempt spans) and the shapes of OpenAI's spec."""

from __future__ import annotations

import base64
import hashlib
import io
import wave
from typing import Any

import pytest

from shared.blueprints._spool import SpooledFile
from shared.clients.llm import ModelRouter
from shared.clients.protocols import UnitUsage
from shared.config import ModelConfig
from shared.errors import InvalidRequestError, UpstreamError
from tests.integration.routers import ADAPTERS, BytesUpload, build_router, deployment, wav_clip
from tests.integration.routers import upstream_requests as hits
from tests.openapi import assert_matches

# What each operation's deployments call the fake provider: OpenAI's models of that kind.
MODELS = {
    "moderate": "openai/omni-moderation-latest",
    "image": "openai/dall-e-3",
    "transcribe": "openai/whisper-1",
    "speech": "openai/tts-1",
    "rerank": "openai/bge-reranker-v2-m3",
}
PATHS = {
    "moderate": "/moderations",
    "image": "/images/generations",
    "transcribe": "/audio/transcriptions",
    "speech": "/audio/speech",
    "rerank": "/rerank",
}
DOCUMENTS = ["cats sleep all day", "otters swim in rivers", "rivers run to the sea"]


@pytest.fixture(params=ADAPTERS)
def adapter(request):
    return request.param


@pytest.fixture
async def router(adapter):
    built = []

    def build(deployments, **settings):
        built.append(build_router(adapter, deployments, **settings))
        return built[-1]

    yield build
    for gateway in built:
        await gateway.aclose()


def of(op: str, name: str, base: str, profile: str = "", **params: Any) -> dict[str, Any]:
    return deployment(name, base, profile, model=MODELS[op], **params)


async def call(gateway: ModelRouter, op: str, model: str) -> tuple[Any, Any]:
    """Run `op` against `model`; (served_by, what came back)."""
    if op == "moderate":
        answer = await gateway.moderate({"model": model, "input": ["I will kill them", "a nice day"]})
    elif op == "image":
        answer = await gateway.generate_images({"model": model, "prompt": "an otter", "n": 2})
    elif op == "transcribe":
        answer = await gateway.transcribe(
            {"model": model, "response_format": "json"}, BytesUpload(wav_clip(1.5))
        )
    elif op == "rerank":
        answer = await gateway.rerank(
            {"model": model, "query": "otters swim in rivers", "documents": DOCUMENTS}
        )
    else:
        stream = await gateway.speech({"model": model, "input": "Hello there", "voice": "alloy"})
        audio = b"".join([block async for block in stream])
        return stream.served_by, audio
    return answer.served_by, answer.body


OPS = list(MODELS)


# --- shapes -------------------------------------------------------------------------------


async def test_moderation_matches_openais_shape(fake_provider_url, router):
    gateway = router([of("moderate", "mod", fake_provider_url)])
    served_by, body = await call(gateway, "moderate", "mod")
    assert_matches("CreateModerationResponse", body)
    assert body["model"] == "mod" and served_by.model == "mod"
    flagged, calm = body["results"]
    assert flagged["flagged"] and flagged["categories"]["violence"] and not calm["flagged"]
    assert "self-harm/intent" in flagged["categories"]  # OpenAI's names, whatever the SDK calls them
    parts = await gateway.moderate(
        {
            "model": "mod",
            "input": [
                {"type": "text", "text": "gore"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        }
    )
    assert_matches("CreateModerationResponse", parts.body)
    assert parts.body["results"][0]["category_applied_input_types"]["violence"] == ["text", "image"]


async def test_images_come_back_as_the_provider_made_them(fake_provider_url, provider, router):
    gateway = router([of("image", "img", fake_provider_url)])
    encoded = await gateway.generate_images(
        {"model": "img", "prompt": "an otter", "response_format": "b64_json", "size": "1024x1024"}
    )
    assert_matches("ImagesResponse", encoded.body)
    [image] = encoded.body["data"]
    assert (
        base64.b64decode(image["b64_json"]).startswith(b"\x89PNG") and image["revised_prompt"] == "an otter"
    )
    linked = await gateway.generate_images({"model": "img", "prompt": "an otter", "n": 2, "quality": "hd"})
    assert_matches("ImagesResponse", linked.body)
    assert [set(i) for i in linked.body["data"]] == [{"url", "revised_prompt"}] * 2
    sent = hits(provider, "/images/generations")[-1]["body"]
    assert sent == {"model": "dall-e-3", "prompt": "an otter", "n": 2, "quality": "hd"}


@pytest.mark.parametrize("response_format", ["json", "verbose_json", "text", "srt", "vtt"])
async def test_transcriptions_in_every_format(fake_provider_url, provider, router, response_format):
    gateway = router([of("transcribe", "stt", fake_provider_url)])
    clip = wav_clip(1.5)
    params = {"model": "stt", "response_format": response_format, "language": "en"}
    if response_format == "verbose_json":
        params["timestamp_granularities"] = ["word", "segment"]
    answer = await gateway.transcribe(params, BytesUpload(clip))
    body = answer.body
    assert f"Fake transcript of {len(clip)} bytes" in body["text"]
    if response_format == "json":
        assert_matches("CreateTranscriptionResponseJson", body)
        assert body["usage"]["type"] == "duration" and body["usage"]["seconds"] == 2
    elif response_format == "verbose_json":
        assert_matches("CreateTranscriptionResponseVerboseJson", body)
        assert body["duration"] == 1.5 and body["words"] and body["segments"]
    else:
        assert set(body) == {"text"} and body["text"].endswith("\n")
    [sent] = hits(provider, "/audio/transcriptions")
    assert sent["body"]["file"]["sha256"] == hashlib.sha256(clip).hexdigest()
    assert sent["body"]["response_format"] == response_format and sent["body"]["model"] == "whisper-1"
    if response_format == "verbose_json":
        assert sent["body"]["timestamp_granularities"] == ["word", "segment"]  # as OpenAI's SDK sends lists


async def test_a_spooled_upload_on_disk_is_sent_whole_on_every_attempt(fake_provider_url, provider, router):
    gateway = router(
        [of("transcribe", "stt", fake_provider_url, "fail_first=1")], num_retries=1, retry_after=0
    )
    clip = wav_clip(3)  # 96 kB: past the spool's memory here, so it is read from disk each time
    spool = SpooledFile("clip.wav", "audio/wav", memory_bytes=16 * 1024)

    async def arriving():
        for start in range(0, len(clip), 10_000):
            yield clip[start : start + 10_000]

    await spool.fill(arriving())
    try:
        assert spool.on_disk and spool.size == len(clip)
        answer = await gateway.transcribe({"model": "stt", "response_format": "json"}, spool)
    finally:
        spool.close()
    assert answer.served_by.retries == 1
    first, second = hits(provider, "/audio/transcriptions")
    assert first["status"] == 500 and second["status"] == 200
    assert second["body"]["file"]["size"] == len(clip)
    assert second["body"]["file"]["sha256"] == hashlib.sha256(clip).hexdigest()


async def test_speech_is_the_providers_audio(fake_provider_url, router):
    gateway = router([of("speech", "tts", fake_provider_url)])
    stream = await gateway.speech(
        {"model": "tts", "input": "Hello there", "voice": "alloy", "response_format": "wav"}
    )
    assert stream.content_type == "audio/wav"
    audio = b"".join([block async for block in stream])
    with wave.open(io.BytesIO(audio)) as clip:
        assert clip.getframerate() == 24_000 and clip.getnframes() == 6_000


async def test_speech_cut_mid_body_is_an_error_never_a_short_file(fake_provider_url, router, adapter):
    gateway = router([of("speech", "tts", fake_provider_url, "fault=cut,cut_after=1")])
    received = []
    with pytest.raises(UpstreamError):
        stream = await gateway.speech({"model": "tts", "input": "Hello there", "voice": "alloy"})
        async for block in stream:
            received.append(block)
    # Natively the first block was relayed before the cut; LiteLLM reads the whole body first.
    assert (len(b"".join(received)) == 4096) if adapter == "native" else not received


async def test_rerank_in_cohere_shape(fake_provider_url, router):
    gateway = router([of("rerank", "rr", fake_provider_url)])
    answer = await gateway.rerank(
        {"model": "rr", "query": "otters swim in rivers", "documents": DOCUMENTS, "top_n": 2}
    )
    body = answer.body
    assert set(body) == {"id", "results", "meta"}
    assert [r["index"] for r in body["results"]] == [1, 2]
    assert body["results"][0]["document"] == {"text": DOCUMENTS[1]}
    assert body["results"][0]["relevance_score"] > body["results"][1]["relevance_score"]
    assert body["meta"]["billed_units"]["total_tokens"] == 17  # the query's words and the documents''
    bare = await gateway.rerank(
        {"model": "rr", "query": "otters", "documents": DOCUMENTS, "return_documents": False}
    )
    assert all(set(r) == {"index", "relevance_score"} for r in bare.body["results"])


# --- routing ------------------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("fault", ["fault=500", "fault=429,retry_after=0", "fault=timeout", "fault=reset"])
async def test_a_failing_deployment_falls_back_to_another_model(
    fake_provider_url, provider, router, adapter, op, fault
):
    gateway = router(
        [of(op, "primary", fake_provider_url, fault, timeout=1), of(op, "backup", fake_provider_url)],
        fallbacks=[{"primary": ["backup"]}],
    )
    served_by, _ = await call(gateway, op, "primary")
    assert (served_by.model, served_by.fallbacks) == ("backup", 1)
    failed = [h for h in hits(provider, PATHS[op]) if fault.split(",")[0] in h["path"]]
    # One request per attempt: no adapter retries behind the router's back. Except that LiteLLM's
    # own HTTP client (its rerank, and every provider it reaches without an SDK) sends a request
    # again, once, on a new connection when the first one was reset.
    resent = adapter == "litellm" and op == "rerank" and fault == "fault=reset"
    assert len(failed) == (2 if resent else 1)


@pytest.mark.parametrize("op", OPS)
async def test_retries_within_the_name_and_no_retry_for_a_bad_request(
    fake_provider_url, provider, router, op
):
    gateway = router([of(op, "flaky", fake_provider_url, "fail_first=1")], num_retries=1, retry_after=0)
    served_by, _ = await call(gateway, op, "flaky")
    assert served_by.retries == 1 and len(hits(provider, PATHS[op])) == 2
    refused = router(
        [of(op, "picky", fake_provider_url, "status=400,error_message=that is not allowed")], num_retries=2
    )
    with pytest.raises(InvalidRequestError, match="rejected the request as invalid"):  # not its words
        await call(refused, op, "picky")
    assert len(hits(provider, "status=400")) == 1


@pytest.mark.parametrize("op", OPS)
async def test_a_deployment_that_keeps_failing_cools_down_and_its_twin_serves(
    fake_provider_url, provider, router, op
):
    gateway = router(
        [
            of(op, "pair", fake_provider_url, "fault=500", id_="pair-bad"),
            of(op, "pair", fake_provider_url, id_="pair-good"),
        ],
        num_retries=2,
        allowed_fails=0,
        cooldown_time=60,
    )
    served = [(await call(gateway, op, "pair"))[0].deployment for _ in range(6)]
    assert set(served) == {"pair-good"}
    assert len(hits(provider, "fault=500")) <= 1


async def test_only_deployments_that_serve_an_operation_are_picked(fake_provider_url, provider, router):
    chat_model = deployment("mixed", fake_provider_url, id_="mixed-chat")  # gpt-4o-mini: a chat model
    gateway = router(
        [
            chat_model,
            of("image", "mixed", fake_provider_url, id_="mixed-image"),
            deployment("chat", fake_provider_url),
        ]
    )
    served = {
        (await gateway.generate_images({"model": "mixed", "prompt": "x"})).served_by.deployment
        for _ in range(8)
    }
    assert served == {"mixed-image"}
    assert gateway.serves("mixed", "images/generations") and not gateway.serves("chat", "images/generations")
    assert not gateway.serves("chat", "rerank") and not gateway.serves("nope", "rerank")
    provider.post("/_control/reset")
    with pytest.raises(InvalidRequestError) as refused:
        await gateway.generate_images({"model": "chat", "prompt": "x"})
    assert refused.value.code == "model_not_supported" and refused.value.param == "model"
    assert hits(provider) == []  # refused before any provider call: nothing cooled down
    # A model the map does not know is the provider's to answer.
    unknown = router([deployment("mystery", fake_provider_url, model="openai/my-own-model")])
    assert unknown.serves("mystery", "rerank") and unknown.serves("mystery", "moderations")


async def test_a_fallback_that_does_not_serve_the_operation_is_skipped(fake_provider_url, provider, router):
    gateway = router(
        [
            of("rerank", "primary", fake_provider_url, "fault=500"),
            deployment("chatty", fake_provider_url),
            of("rerank", "backup", fake_provider_url),
        ],
        fallbacks=[{"primary": ["chatty", "backup"]}],
    )
    answer = await gateway.rerank({"model": "primary", "query": "q", "documents": ["d"]})
    assert answer.served_by.model == "backup"
    assert all(h["body"]["model"] != "gpt-4o-mini" for h in hits(provider, "/rerank"))


async def test_every_attempt_has_its_span(fake_provider_url, router, spans):
    gateway = router(
        [of("image", "primary", fake_provider_url, "fault=500"), of("image", "backup", fake_provider_url)],
        fallbacks=[{"primary": ["backup"]}],
    )
    await call(gateway, "image", "primary")
    attempts = [s for s in spans.get_finished_spans() if s.name.startswith("provider ")]
    assert [s.attributes["gen_ai.operation.name"] for s in attempts] == ["image_generation"] * 2
    assert [s.attributes.get("http.response.status_code") for s in attempts] == [500, None]


async def test_azure_deployments_are_addressed_for_audio(fake_provider_url, provider):
    gateway = ModelRouter(
        ModelConfig.model_validate(
            {
                "model_list": [
                    {
                        "model_name": "stt",
                        "litellm_params": {
                            "model": "azure/my-whisper",
                            "api_base": fake_provider_url,
                            "api_key": "k",
                            "api_version": "2024-10-21",
                        },
                        "model_info": {"mode": "audio_transcription"},
                    }
                ]
            }
        )
    )
    try:
        answer = await gateway.transcribe(
            {"model": "stt", "response_format": "json"}, BytesUpload(wav_clip(0.5))
        )
    finally:
        await gateway.aclose()
    assert answer.body["usage"]["seconds"] == 1
    [sent] = hits(provider, "/openai/deployments/my-whisper/audio/transcriptions")
    assert sent["api_version"] == "2024-10-21" and "model" not in sent["body"]
    assert {k.lower(): v for k, v in sent["headers"].items()}["api-key"] == "k"


# --- prices per unit ----------------------------------------------------------------------


async def test_unit_costs_from_the_file_or_litellms_price_map(fake_provider_url, router):
    gateway = router(
        [
            of("image", "img", fake_provider_url),
            of("image", "img-priced", fake_provider_url, input_cost_per_image=0.5),
            of("transcribe", "stt", fake_provider_url),
            of("speech", "tts", fake_provider_url),
            of("rerank", "rr", fake_provider_url),
            of("rerank", "rr-priced", fake_provider_url, input_cost_per_query=0.002),
            of("moderate", "mod", fake_provider_url),
            deployment("mystery", fake_provider_url, model="openai/my-own-model"),
        ],
        fallbacks=[{"img": ["img-priced"]}],
    )
    cost = gateway.unit_cost_usd

    async def served(op: str, model: str) -> Any:
        return (await call(gateway, op, model))[0]

    img = await served("image", "img")
    # dall-e-3 in LiteLLM's map: $0.04 an image, or per pixel for a given quality and size.
    assert cost(img, UnitUsage("images", 2)) == pytest.approx(0.08)
    assert cost(img, UnitUsage("images", 1, size="1024x1024", quality="hd")) == pytest.approx(0.08, rel=1e-3)
    assert cost(await served("image", "img-priced"), UnitUsage("images", 3)) == pytest.approx(1.5)
    assert gateway.max_unit_cost_usd("img", UnitUsage("images", 2)) == pytest.approx(1.0)  # its fallback's
    # whisper-1: $0.006 a minute; tts-1: $15 a million characters.
    assert cost(await served("transcribe", "stt"), UnitUsage("seconds", 60)) == pytest.approx(0.006)
    assert cost(await served("transcribe", "stt"), UnitUsage("seconds", None)) is None
    assert cost(await served("speech", "tts"), UnitUsage("characters", 1000)) == pytest.approx(0.015)
    assert cost(await served("rerank", "rr-priced"), UnitUsage("search_units", 2)) == pytest.approx(0.004)
    assert cost(await served("rerank", "rr"), UnitUsage("search_units", 1, input_tokens=50)) is None
    # omni-moderation-latest is free per token; a model nobody prices costs None, not 0.
    assert cost(await served("moderate", "mod"), UnitUsage("inputs", 2, input_tokens=9)) == 0.0
    mystery = (
        await gateway.chat({"model": "mystery", "messages": [{"role": "user", "content": "hi"}]})
    ).served_by
    assert cost(mystery, UnitUsage("inputs", 1, input_tokens=9)) is None
