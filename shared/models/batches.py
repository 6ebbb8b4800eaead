"""Batches: OpenAI's Batch object and request, how a batch is stored, and its queue messages."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/completions")
BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]
ENDED = frozenset({"failed", "completed", "expired", "cancelled"})
MAX_LINES = 50_000
MAX_REPORTED_ERRORS = 100


class BatchCreate(BaseModel):
    """POST /v1/batches."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=128)
    endpoint: Literal["/v1/chat/completions", "/v1/embeddings", "/v1/completions"]
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = None

    @field_validator("metadata")
    @classmethod
    def _openai_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and (
            len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items())
        ):
            raise ValueError("at most 16 pairs, keys up to 64 and values up to 512 characters")
        return value


class BatchError(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchRecord(BaseModel):
    """The Cosmos item (`batches`, partitioned by batch id): OpenAI's fields and Cirrus's progress."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str
    pk: str
    object: Literal["batch"] = "batch"
    endpoint: str
    input_file_id: str
    completion_window: str = "24h"
    status: BatchStatus = "validating"
    errors: list[BatchError] = Field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    ts: float
    # When the item last changed (every write sets it; a running chunk writes at least once a
    # minute): the sweeper takes a batch that has not changed for long as stuck.
    updated_at: float | None = None
    in_progress_at: int | None = None
    expires_at: int
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    metadata: dict[str, str] | None = None
    owner: str
    team: str | None = None
    total: int = 0
    chunks: int = 0  # queue messages the requests went out in
    fanned_out: bool = False  # every chunk message has been sent
    # Per chunk (by index): [completed, failed] so far, and whether it has finished. Set, never
    # added to, so a chunk processed twice cannot count twice.
    chunk_counts: dict[str, list[int]] = Field(default_factory=dict)
    chunks_done: list[int] = Field(default_factory=list)
    poisoned_chunks: list[int] = Field(default_factory=list)
    usage: dict[str, int] = Field(default_factory=dict)
    etag: str | None = Field(None, alias="_etag", exclude=True)

    @property
    def request_counts(self) -> RequestCounts:
        completed = sum(c[0] for c in self.chunk_counts.values())
        failed = sum(c[1] for c in self.chunk_counts.values())
        return RequestCounts(total=self.total, completed=completed, failed=failed)

    def public(self) -> dict[str, Any]:
        """OpenAI's Batch object."""
        body: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": (
                {"object": "list", "data": [e.model_dump() for e in self.errors]} if self.errors else None
            ),
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": self.request_counts.model_dump(),
            "metadata": self.metadata,
        }
        # OpenAI's schema has no nulls for these: a field not reached yet is left out.
        body = {k: v for k, v in body.items() if v is not None or k == "metadata"}
        if self.usage:
            body["usage"] = {
                "input_tokens": self.usage.get("input_tokens", 0),
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.usage.get("output_tokens", 0),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.usage.get("input_tokens", 0) + self.usage.get("output_tokens", 0),
            }
        return body


class BatchMessage(BaseModel):
    """A message on the batch queue: versioned, and small (the requests stay in Blob)."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    kind: Literal["start", "chunk", "finalize"]
    batch_id: str = Field(min_length=1, max_length=128)
    chunk: int | None = Field(None, ge=0)
