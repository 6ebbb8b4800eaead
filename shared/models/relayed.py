"""Answers relayed from providers in OpenAI's shape, where the `openai` package's models (which the
OpenAPI document uses for the rest) describe what its SDK makes of the wire, not the wire."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingPublic(BaseModel):
    model_config = ConfigDict(extra="allow")

    object: Literal["embedding"] = "embedding"
    index: int
    # Floats, or with `encoding_format: base64` their little-endian float32 bytes in base64 (the
    # SDK decodes those, so its model has floats only).
    embedding: list[float] | str


class EmbeddingListPublic(BaseModel):
    """`POST /v1/embeddings`."""

    model_config = ConfigDict(extra="allow")

    object: Literal["list"] = "list"
    data: list[EmbeddingPublic]
    model: str
    usage: EmbeddingUsage
