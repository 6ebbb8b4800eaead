"""Moderations, images, transcriptions, speech and rerank with a scripted router: the model checks,
what reaches the provider, and the usage each records in its own unit."""

from __future__ import annotations

import io
import struct
import wave
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from shared.blueprints.audio_http import form_body
from shared.clients.protocols import ModelAnswer, ServedBy, UnitUsage
from shared.config import ModelConfig
from shared.errors import InvalidRequestError, ModelNotFoundError, PermissionDeniedError, UpstreamError
from shared.models.audio import SpeechCreate, TranscriptionCreate
from shared.models.images import ImageCreate
from shared.models.moderations import ModerationCreate
from shared.models.rerank import RerankCreate
from shared.services.audio import SpeechService, TranscriptionService, wav_seconds
from shared.services.auth import Limits, Principal
from shared.services.background import Background
from shared.services.calls import CallContext, Metering
from shared.services.images import ImageService
from shared.services.limits import KeyLimiter
from shared.services.model_catalog import ModelCatalog
from shared.services.moderations import ModerationService
from shared.services.rerank import RerankService
from shared.services.usage import UsageService
from tests.fakes import FakeLLMRouter, InMemoryDocumentStore, InMemoryQueueStore, served_by

MODES = {
    "mod": "moderations",
    "img": "images/generations",
    "stt": "audio/transcriptions",
    "tts": "audio/speech",
    "rr": "rerank",
}
CONFIG = ModelConfig.model_validate(
    {
        "model_list": [
            {"model_name": name, "litellm_params": {"model": "openai/x"}} for name in [*MODES, "chat"]
        ]
    }
)
ALICE = Principal(key_id="key-alice", is_master=False)
PER_UNIT = {"images": 0.04, "seconds": 0.0001, "characters": 0.000015, "search_units": 0.002}


@dataclass
class FakeBytes:
    blocks: list[bytes]
    served_by: ServedBy
    content_type: str = "audio/wav"
    fail_after: int | None = None
    closed: bool = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index, block in enumerate(self.blocks):
            if self.fail_after is not None and index >= self.fail_after:
                raise UpstreamError("The model provider cut the audio short.")
            yield block

    async def aclose(self) -> None:
        self.closed = True


class SurfaceRouter(FakeLLMRouter):
    """FakeLLMRouter plus the surface beyond chat: each model in MODES serves one path; `answers`
    scripts the next bodies; prices per unit are PER_UNIT; `holds` are the budget holds asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[dict[str, Any] | BaseException] = []
        self.uploads: list[bytes] = []  # each upload as the provider read it
        self.holds: list[UnitUsage] = []
        self.speech_stream: FakeBytes | None = None

    async def _answer(self, params: Mapping[str, Any]) -> ModelAnswer:
        self.calls.append(dict(params))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return ModelAnswer(answer, served_by(params["model"]))

    async def moderate(self, params: Mapping[str, Any]) -> ModelAnswer:
        return await self._answer(params)

    async def generate_images(self, params: Mapping[str, Any]) -> ModelAnswer:
        return await self._answer(params)

    async def rerank(self, params: Mapping[str, Any]) -> ModelAnswer:
        return await self._answer(params)

    async def transcribe(self, params: Mapping[str, Any], audio: Any) -> ModelAnswer:
        with audio.open() as file:
            self.uploads.append(file.read())
        return await self._answer(params)

    async def speech(self, params: Mapping[str, Any]) -> FakeBytes:
        self.calls.append(dict(params))
        assert self.speech_stream is not None
        return self.speech_stream

    def serves(self, model: str, path: str) -> bool:
        return MODES.get(model) == path

    def unit_cost_usd(self, served_by: ServedBy, usage: UnitUsage) -> float | None:
        if usage.units is not None and usage.unit in PER_UNIT:
            return usage.units * PER_UNIT[usage.unit]
        return (
            self.cost_usd(served_by, usage.input_tokens, usage.output_tokens) if usage.input_tokens else None
        )

    def max_unit_cost_usd(self, model: str, usage: UnitUsage) -> float | None:
        self.holds.append(usage)
        return self.unit_cost_usd(served_by(model), usage)


class World:
    def __init__(self) -> None:
        self.router = SurfaceRouter()
        self.documents = InMemoryDocumentStore()
        self.background = Background()
        usage = UsageService(self.documents, InMemoryQueueStore(), "usage", self.background, flush_interval=0)
        metering = Metering(self.router, usage, self.background, KeyLimiter(self.documents))
        catalog = ModelCatalog(CONFIG, created=0)
        self.moderations = ModerationService(metering, catalog)
        self.images = ImageService(metering, catalog)
        self.transcriptions = TranscriptionService(metering, catalog)
        self.speech = SpeechService(metering, catalog)
        self.rerank = RerankService(metering, catalog)

    async def records(self) -> list[dict[str, Any]]:
        await self.background.drain()
        return [r for item in self.documents.items.get("usage", {}).values() for r in item["records"]]


@pytest.fixture
def world() -> World:
    return World()


def call(principal: Principal = ALICE) -> CallContext:
    return CallContext(request_id="req_1", principal=principal)


@dataclass
class Upload:
    """Implements `UploadedFile` over bytes in memory."""

    data: bytes
    filename: str = "clip.wav"
    content_type: str = "audio/wav"

    @property
    def size(self) -> int:
        return len(self.data)

    def open(self) -> io.BytesIO:
        return io.BytesIO(self.data)


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(rate)
        clip.writeframes(struct.pack("<h", 0) * int(seconds * rate))
    return buffer.getvalue()


# --- the checks every endpoint makes before calling a provider --------------------------------------


async def test_a_model_that_does_not_serve_the_path_is_a_400_before_any_call(world):
    with pytest.raises(InvalidRequestError) as refused:
        await world.images.create(ImageCreate(model="chat", prompt="a fox"), call())
    assert refused.value.param == "model" and refused.value.code == "model_not_supported"
    assert "/v1/images/generations" in str(refused.value)
    with pytest.raises(InvalidRequestError):
        await world.rerank.create(RerankCreate(model="img", query="q", documents=["d"]), call())
    assert world.router.calls == [] and await world.records() == []


async def test_an_unknown_model_is_a_404_and_a_forbidden_one_a_403(world):
    with pytest.raises(ModelNotFoundError):
        await world.moderations.create(ModerationCreate(model="nope", input="hi"), call())
    only_chat = Principal(key_id="key-bob", is_master=False, models=frozenset({"chat"}))
    with pytest.raises(PermissionDeniedError):
        await world.speech.open(SpeechCreate(model="tts", input="hi", voice="alloy"), call(only_chat))
    with pytest.raises(PermissionDeniedError):
        await world.transcriptions.create(TranscriptionCreate(model="stt"), Upload(b"x"), call(only_chat))
    with pytest.raises(PermissionDeniedError):  # what the form's `model` field is checked with early
        world.transcriptions.check("stt", call(only_chat))
    with pytest.raises(InvalidRequestError):
        world.transcriptions.check("chat", call())
    world.transcriptions.check("stt", call())
    assert world.router.calls == []


# --- what each records --------------------------------------------------------------------------------


async def test_moderation_counts_inputs_and_its_text_tokens(world):
    world.router.answers.append({"id": "modr-1", "model": "x", "results": [{}, {}]})
    answer = await world.moderations.create(
        ModerationCreate(model="mod", input=["three words here", "two words"]), call()
    )
    assert answer.body["id"] == "modr-1"
    assert world.router.calls == [{"model": "mod", "input": ["three words here", "two words"]}]
    (record,) = await world.records()
    assert (record["endpoint"], record["unit"], record["units"]) == ("moderations", "inputs", 2)
    assert record["input_tokens"] == 5 and record["usage_estimated"] is True
    assert record["cost_usd"] == pytest.approx(5e-6)  # no per-input price: its tokens


async def test_images_count_what_came_back_at_the_size_asked_for(world):
    world.router.answers.append({"created": 1, "data": [{"url": "u1"}, {"url": "u2"}]})
    request = ImageCreate(model="img", prompt="a fox", n=3, size="1024x1024", quality="hd")
    await world.images.create(request, call(Principal("key-c", False, limits=Limits(max_budget=1.0))))
    (hold,) = world.router.holds
    assert (hold.unit, hold.units, hold.size, hold.quality) == ("images", 3, "1024x1024", "hd")
    (record,) = await world.records()
    assert (record["unit"], record["units"]) == ("images", 2)  # the provider made two of three
    assert record["cost_usd"] == pytest.approx(0.08)


async def test_token_billed_images_keep_their_tokens(world):
    world.router.answers.append(
        {"created": 1, "data": [{"b64_json": "AA=="}], "usage": {"input_tokens": 7, "output_tokens": 272}}
    )
    await world.images.create(ImageCreate(model="img", prompt="a fox"), call())
    (record,) = await world.records()
    assert (record["units"], record["input_tokens"], record["output_tokens"]) == (1, 7, 272)


async def test_a_transcription_sends_the_upload_and_records_the_providers_seconds(world):
    audio = wav_bytes(2.0)
    world.router.answers.append({"text": "hi", "usage": {"type": "duration", "seconds": 3}})
    request = TranscriptionCreate.model_validate({"model": "stt", "language": "en"})
    await world.transcriptions.create(
        request, Upload(audio), call(Principal("key-c", False, limits=Limits(max_budget=1.0)))
    )
    assert world.router.uploads == [audio]
    assert world.router.calls == [{"model": "stt", "language": "en", "response_format": "json"}]
    assert world.router.holds[0].units == pytest.approx(2.0)  # held: the WAV header's length
    (record,) = await world.records()
    assert (record["endpoint"], record["unit"], record["units"]) == ("audio.transcriptions", "seconds", 3)
    assert record["usage_estimated"] is False and record["cost_usd"] == pytest.approx(0.0003)


@pytest.mark.parametrize(
    ("body", "audio", "units", "estimated"),
    [
        ({"text": "hi", "duration": 4.5}, b"not a wav", 4.5, False),  # verbose_json
        ({"text": "hi"}, wav_bytes(1.5), 1.5, True),  # text formats: the WAV header's length
        ({"text": "hi"}, b"not a wav", None, False),  # nobody knows
    ],
)
async def test_transcription_seconds_come_from_the_provider_else_the_wav_else_nobody(
    world, body, audio, units, estimated
):
    world.router.answers.append(body)
    await world.transcriptions.create(TranscriptionCreate(model="stt"), Upload(audio), call())
    (record,) = await world.records()
    assert record["units"] == (pytest.approx(units) if units is not None else None)
    assert record["usage_estimated"] is estimated
    assert record["cost_usd"] == (pytest.approx(units * 0.0001) if units is not None else None)


async def test_a_failed_transcription_is_recorded_as_an_error(world):
    world.router.answers.append(UpstreamError("The model provider returned an error."))
    with pytest.raises(UpstreamError):
        await world.transcriptions.create(TranscriptionCreate(model="stt"), Upload(b"x"), call())
    (record,) = await world.records()
    assert record["status"] != "ok" and record["cost_usd"] is None


async def test_speech_is_relayed_as_it_arrives_and_metered_in_characters_at_the_end(world):
    world.router.speech_stream = FakeBytes([b"RIFF", b"data"], served_by("tts"))
    speech = await world.speech.open(SpeechCreate(model="tts", input="twelve chars", voice="alloy"), call())
    assert speech.content_type == "audio/wav"
    assert await world.records() == []  # not until the audio has been sent
    assert [block async for block in speech.chunks] == [b"RIFF", b"data"]
    assert world.router.speech_stream.closed
    (record,) = await world.records()
    assert (record["endpoint"], record["unit"], record["units"]) == ("audio.speech", "characters", 12)
    assert record["cost_usd"] == pytest.approx(12 * 0.000015) and record["status"] == "ok"


async def test_speech_cut_short_raises_and_records_the_error(world):
    world.router.speech_stream = FakeBytes([b"RIFF", b"data"], served_by("tts"), fail_after=1)
    speech = await world.speech.open(SpeechCreate(model="tts", input="hi", voice="alloy"), call())
    with pytest.raises(UpstreamError):
        _ = [block async for block in speech.chunks]
    (record,) = await world.records()
    assert record["status"] != "ok" and world.router.speech_stream.closed


@pytest.mark.parametrize(
    ("meta", "units", "estimated"),
    [
        ({"billed_units": {"search_units": 3}}, 3, False),
        ({"tokens": {"input_tokens": 40}}, 1, True),  # vLLM, Jina: no search units, one a request
    ],
)
async def test_rerank_records_search_units(world, meta, units, estimated):
    world.router.answers.append({"id": "r", "results": [], "meta": meta})
    documents = ["d"] * 250
    await world.rerank.create(
        RerankCreate(model="rr", query="q", documents=documents),
        call(Principal("key-c", False, limits=Limits(max_budget=1.0))),
    )
    assert world.router.holds[0].units == 3  # held: one unit per 100 documents
    (record,) = await world.records()
    assert (record["unit"], record["units"], record["usage_estimated"]) == ("search_units", units, estimated)
    assert record["cost_usd"] == pytest.approx(units * 0.002)


# --- the requests, checked before any provider call ---------------------------------------------------


def test_transcription_form_fields_become_typed_values():
    request = TranscriptionCreate.model_validate(
        {
            "model": "stt",
            "temperature": "0.2",
            "timestamp_granularities": ["word", "segment"],
            "include": "logprobs",
            "chunking_strategy": '{"type": "server_vad"}',
        }
    )
    assert request.temperature == 0.2 and request.include == ["logprobs"]
    assert request.chunking_strategy == {"type": "server_vad"}
    assert request.answers_json
    assert not TranscriptionCreate(model="stt", response_format="srt").answers_json


@pytest.mark.parametrize(
    "fields",
    [
        {"stream": "true"},
        {"response_format": "mp3"},
        {"temperature": "2"},
        {"chunking_strategy": "{not json"},
        {"timestamp_granularities": ["minute"]},
    ],
)
def test_bad_transcription_fields_are_refused(fields):
    with pytest.raises(ValueError):
        TranscriptionCreate.model_validate({"model": "stt", **fields})


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (SpeechCreate, {"input": "hi", "voice": "alloy", "stream_format": "sse"}),
        (SpeechCreate, {"input": "x" * 4097, "voice": "alloy"}),
        (SpeechCreate, {"input": "hi", "voice": "alloy", "speed": 5}),
        (ImageCreate, {"prompt": "a fox", "size": "huge"}),
        (ImageCreate, {"prompt": "a fox", "n": 11}),
        (ImageCreate, {"prompt": "a fox", "stream": True}),
        (ModerationCreate, {"input": []}),
        (ModerationCreate, {"input": [{"type": "video", "video": "x"}]}),
        (RerankCreate, {"query": "", "documents": ["d"]}),
        (RerankCreate, {"query": "q", "documents": ["d"], "top_n": 0}),
    ],
)
def test_bad_requests_are_refused(model, body):
    with pytest.raises(ValueError):
        model.model_validate({"model": "m", **body})


def test_moderation_texts_skip_images():
    request = ModerationCreate.model_validate(
        {
            "model": "m",
            "input": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        }
    )
    assert request.texts() == ["look", ""]


def test_wav_seconds_reads_the_header_only_of_a_wav():
    assert wav_seconds(Upload(wav_bytes(0.5))) == pytest.approx(0.5)
    assert wav_seconds(Upload(b"ID3 an mp3")) is None
    assert wav_seconds(Upload(b"")) is None


def test_form_fields_become_a_body_with_lists_for_repeated_names():
    fields = [("model", "stt"), ("include[]", "logprobs"), ("timestamp_granularities[]", "word")]
    fields.append(("timestamp_granularities[]", "segment"))
    assert form_body(fields) == {
        "model": "stt",
        "include": ["logprobs"],
        "timestamp_granularities": ["word", "segment"],
    }
    assert form_body([("language", "en"), ("language", "fr")]) == {"language": ["en", "fr"]}
