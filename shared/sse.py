"""Server-sent events, encoded the way OpenAI streams them: one `data:` line per event.

Pure functions over bytes; tested as exact bytes in tests/unit/test_sse.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"
MEDIA_TYPE = "text/event-stream"
# Sent with every stream: caches and proxies (nginx, APIM) must pass events through unbuffered.
HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def data_event(data: Mapping[str, Any]) -> bytes:
    """One `data:` event of compact JSON: what every OpenAI stream chunk is (the hot path)."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


def encode(data: Mapping[str, Any] | str, *, event: str | None = None, id: str | None = None) -> bytes:
    """One event. Mappings become compact JSON; a multi-line string becomes several `data:` lines."""
    payload = data if isinstance(data, str) else orjson.dumps(data).decode()
    lines = []
    if id is not None:
        lines.append(f"id: {_single_line(id, 'id')}")
    if event is not None:
        lines.append(f"event: {_single_line(event, 'event')}")
    lines.extend(f"data: {line}" for line in payload.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def comment(text: str = "") -> bytes:
    """A comment line: ignored by clients, useful as a keep-alive through idle proxies."""
    return f": {_single_line(text, 'comment')}\n\n".encode()


def _single_line(value: str, field: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"SSE {field} must be a single line")
    return value
