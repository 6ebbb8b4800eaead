"""`POST /v1/rerank`: the Cohere/Jina request LiteLLM exposes, checked before any provider call."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from shared.models.requests import OpenAIRequest

MAX_DOCUMENTS = 10_000  # Cohere's own limit per request
DOCUMENTS_PER_SEARCH_UNIT = 100  # Cohere bills a query over up to 100 documents as one search unit


class RerankCreate(OpenAIRequest):
    """`documents` are strings or objects (`{"text": ...}`, or fields named by `rank_fields`)."""

    query: str = Field(min_length=1)
    documents: list[str | dict[str, Any]] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool | None = None
    rank_fields: list[str] | None = None
    max_chunks_per_doc: int | None = Field(None, ge=1)
    max_tokens_per_doc: int | None = Field(None, ge=1)
