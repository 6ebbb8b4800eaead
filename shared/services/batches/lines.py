"""The lines of a batch: a request as the chunk blobs hold it, and OpenAI's result line format
(`{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared.errors import CirrusError, error_body
from shared.models.requests import ChatCompletionCreate, CompletionCreate, EmbeddingCreate

REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionCreate,
    "/v1/embeddings": EmbeddingCreate,
    "/v1/completions": CompletionCreate,
}


@dataclass
class Request:
    line: int
    custom_id: str
    body: dict[str, Any]


def succeeded(line: dict[str, Any]) -> bool:
    return bool(line.get("response")) and line["response"].get("status_code") == 200


def success_line(custom_id: str, request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": request_id, "body": body},
        "error": None,
    }


def error_line(request: Request, exc: CirrusError) -> dict[str, Any]:
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": request.custom_id,
        "response": {"status_code": exc.status, "request_id": None, "body": error_body(exc)},
        "error": None,
    }


MISSING_MESSAGES = {
    "batch_cancelled": "The batch was cancelled before this request ran.",
    "batch_expired": "The batch expired before this request ran.",
    "batch_request_failed": "This request could not be processed; see the server log.",
}


def missing_line(request: Request, code: str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": request.custom_id,
        "response": None,
        "error": {"code": code, "message": MISSING_MESSAGES[code]},
    }


async def numbered_lines(
    chunks: AsyncIterator[bytes], max_bytes: int | None = None
) -> AsyncIterator[tuple[int, str | None]]:
    """Numbered lines (from 1) of a byte stream, without their newline. A line longer than
    `max_bytes` is None: it is skipped as it streams by, so at most `max_bytes` and one chunk of
    the stream are ever held, however long the line."""
    number = 0
    held = bytearray()
    skipping = False  # inside a line already too long: its bytes are dropped until its newline
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            number += 1
            piece = memoryview(chunk)[start:end]
            if skipping or (max_bytes is not None and len(held) + len(piece) > max_bytes):
                yield number, None
            else:
                held += piece
                yield number, held.decode("utf-8", "replace")
            held.clear()
            skipping, start = False, end + 1
        if not skipping:
            if max_bytes is not None and len(held) + len(chunk) - start > max_bytes:
                skipping = True
                held.clear()
            else:
                held += memoryview(chunk)[start:]
    if skipping:
        yield number + 1, None
    elif held:
        yield number + 1, held.decode("utf-8", "replace")
