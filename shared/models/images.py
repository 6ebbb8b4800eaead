"""`POST /v1/images/generations`: OpenAI's request, checked before any provider call."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator

from shared.models.requests import OpenAIRequest, ShortStr

MAX_IMAGES = 10  # OpenAI's own limit per request


class ImageCreate(OpenAIRequest):
    """Everything but `prompt` passes through as the client set it; `n` images at most 10."""

    prompt: str = Field(min_length=1, max_length=32_000)
    n: int | None = Field(None, ge=1, le=MAX_IMAGES)
    size: Annotated[str, StringConstraints(pattern=r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$")] | None = None
    quality: Literal["standard", "hd", "low", "medium", "high", "auto"] | None = None
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    background: Literal["transparent", "opaque", "auto"] | None = None
    moderation: Literal["low", "auto"] | None = None
    style: Literal["vivid", "natural"] | None = None
    stream: bool | None = None
    partial_images: int | None = Field(None, ge=0, le=3)
    user: ShortStr | None = None

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("streamed image generation is not supported; leave `stream` unset")
        return value
