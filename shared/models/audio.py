"""`POST /v1/audio/transcriptions` (a form: its fields here, the file beside them) and
`POST /v1/audio/speech`: OpenAI's requests, checked before any provider call."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared.models.requests import OpenAIRequest, ShortStr

# Answered as JSON; the other formats (text, srt, vtt) are text.
JSON_FORMATS = frozenset({"json", "verbose_json", "diarized_json"})
_LIST_FIELDS = ("timestamp_granularities", "include", "languages", "keywords")


class TranscriptionCreate(OpenAIRequest):
    """The form fields of a transcription (as strings, the way they arrive; lists as repeated
    `name[]` fields, as OpenAI's SDKs send them)."""

    language: ShortStr | None = None
    languages: list[ShortStr] | None = None
    keywords: list[ShortStr] | None = None
    prompt: str | None = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    timestamp_granularities: list[Literal["word", "segment"]] | None = None
    include: list[Literal["logprobs"]] | None = None
    stream: bool | None = None
    chunking_strategy: Literal["auto"] | dict[str, Any] | None = None
    known_speaker_names: list[ShortStr] | None = Field(None, max_length=4)
    known_speaker_references: list[str] | None = Field(None, max_length=4)

    @field_validator(*_LIST_FIELDS, "known_speaker_names", "known_speaker_references", mode="before")
    @classmethod
    def _one_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("chunking_strategy", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("must be `auto` or a JSON object") from None
        return value

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("streamed transcription is not supported; leave `stream` unset")
        return value

    @property
    def answers_json(self) -> bool:
        return (self.response_format or "json") in JSON_FORMATS


class CustomVoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class SpeechCreate(OpenAIRequest):
    """Text in; the audio comes back as the provider's bytes."""

    input: str = Field(min_length=1, max_length=4096)
    voice: Annotated[str, StringConstraints(min_length=1, max_length=256)] | CustomVoice
    instructions: str | None = Field(None, max_length=4096)
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    speed: float | None = Field(None, ge=0.25, le=4)
    stream_format: Literal["audio", "sse"] | None = None

    @field_validator("stream_format")
    @classmethod
    def _audio_only(cls, value: str | None) -> str | None:
        if value == "sse":
            raise ValueError("`sse` is not supported; the audio is streamed as it is made (`audio`)")
        return value
