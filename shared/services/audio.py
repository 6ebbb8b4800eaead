"""Audio: transcriptions (counted in seconds of audio) and speech (counted in characters).

Seconds are what the provider reports (`usage.seconds`, or a verbose answer's `duration`), else
the duration in the upload's header when it is a PCM WAV (the record then says Cirrus counted
them), else unknown: `units` None, and a cost only if the provider reported tokens to price. The
budget hold is the WAV's seconds when known, else nothing (the length of other audio is not known
before the provider has heard it). Speech is priced by the characters of its input, held in full
before the call; its audio is relayed as it arrives and the call is metered when it ends.
"""

from __future__ import annotations

import contextlib
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from shared.clients.protocols import ByteStream, ModelAnswer, ServedBy, UnitUsage, UploadedFile
from shared.models.audio import SpeechCreate, TranscriptionCreate
from shared.services.calls import CallContext, Meter, Metering, check_model
from shared.services.model_catalog import ModelCatalog

TRANSCRIPTIONS_PATH = "audio/transcriptions"
SPEECH_PATH = "audio/speech"


class TranscriptionService:
    def __init__(self, metering: Metering, catalog: ModelCatalog) -> None:
        self._metering = metering
        self._catalog = catalog

    def check(self, model: str, call: CallContext) -> None:
        """Refuse a model the key may not use, or that does not transcribe, before the upload is read
        (clients send the form's fields before its file)."""
        check_model(self._catalog, self._metering.llm, call.principal, model, path=TRANSCRIPTIONS_PATH)

    async def create(
        self, request: TranscriptionCreate, audio: UploadedFile, call: CallContext
    ) -> ModelAnswer:
        llm = self._metering.llm
        self.check(request.model, call)
        heard = wav_seconds(audio)
        meter = await self._metering.start(
            "audio.transcriptions",
            request.model,
            call,
            stream=False,
            attributes={"cirrus.audio.bytes": audio.size},
            max_cost=lambda: llm.max_unit_cost_usd(request.model, UnitUsage("seconds", heard)),
        )
        # OpenAI's default, said out loud: LiteLLM would otherwise ask Whisper for verbose_json.
        params = {**request.upstream_params(), "response_format": request.response_format or "json"}
        answer = await meter.call(llm.transcribe(params, audio))
        meter.finish(served_by=answer.served_by, units=_transcribed(answer.body, heard))
        return answer


def _transcribed(body: dict[str, Any], heard: float | None) -> UnitUsage:
    reported_usage = body.get("usage")
    usage: dict[str, Any] = reported_usage if isinstance(reported_usage, dict) else {}
    reported = usage.get("seconds") if usage.get("type") == "duration" else body.get("duration")
    input_tokens = output_tokens = 0
    if usage.get("type") == "tokens":
        input_tokens, output_tokens = (
            int(usage.get("input_tokens") or 0),
            int(usage.get("output_tokens") or 0),
        )
    if isinstance(reported, int | float):
        return UnitUsage("seconds", float(reported), input_tokens, output_tokens)
    return UnitUsage("seconds", heard, input_tokens, output_tokens, estimated=heard is not None)


def wav_seconds(audio: UploadedFile) -> float | None:
    """The duration a PCM WAV upload's header gives (read without reading the samples), or None."""
    with (
        contextlib.suppress(wave.Error, EOFError, OSError, ZeroDivisionError),
        audio.open() as file,
        wave.open(file, "rb") as clip,
    ):
        return clip.getnframes() / clip.getframerate()
    return None


@dataclass
class OpenSpeech:
    served_by: ServedBy
    content_type: str
    chunks: AsyncIterator[bytes]


class SpeechService:
    def __init__(self, metering: Metering, catalog: ModelCatalog) -> None:
        self._metering = metering
        self._catalog = catalog

    async def open(self, request: SpeechCreate, call: CallContext) -> OpenSpeech:
        """The provider's audio, its first bytes already in (a failure before them raises here)."""
        llm = self._metering.llm
        check_model(self._catalog, llm, call.principal, request.model, path=SPEECH_PATH)
        spoken = UnitUsage("characters", len(request.input))
        meter = await self._metering.start(
            "audio.speech",
            request.model,
            call,
            stream=True,
            attributes={},
            max_cost=lambda: llm.max_unit_cost_usd(request.model, spoken),
            content=request.input,
        )
        stream = await meter.call(llm.speech(request.upstream_params()))
        return OpenSpeech(stream.served_by, stream.content_type, _relay(stream, meter, spoken))


async def _relay(stream: ByteStream, meter: Meter, spoken: UnitUsage) -> AsyncIterator[bytes]:
    error: BaseException | None = None
    try:
        async for block in stream:
            meter.first_token()
            yield block
    except BaseException as exc:
        error = exc
        raise
    finally:
        await stream.aclose()
        meter.finish(served_by=stream.served_by, units=spoken, error=error)
