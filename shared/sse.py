"""Server-sent events: encoded the way OpenAI streams them (one `data:` line per event) or
Anthropic does (`event: <type>` before it), and the `data:` payloads of a provider's stream decoded
as its bytes arrive.

Pure code over bytes; tested as exact bytes in tests/unit/test_sse.py.
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


def typed_event(data: Mapping[str, Any]) -> bytes:
    """One event named by its data's `type`, as Anthropic streams them: `event: <type>`, then one
    `data:` line of compact JSON."""
    name = _single_line(str(data["type"]), "event")
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


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


class DataDecoder:
    """Incremental decoding of a stream's events, per the SSE spec, down to their `data`.

    Feed the bytes as they arrive, in blocks of any size (an event may span blocks, a block may
    hold many events, an event may be far larger than any line-reader's limit); each complete
    event's data comes back once its blank line has arrived. Several `data:` lines of one event
    are joined with a newline; comments and the other fields (`event:`, `id:`, `retry:`) carry
    nothing an OpenAI-style stream needs and are skipped.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data: list[bytes] = []

    def feed(self, block: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += block
        events: list[bytes] = []
        start = 0
        while (end := buffer.find(b"\n", start)) != -1:
            line = bytes(buffer[start : end - 1 if end > start and buffer[end - 1] == 13 else end])
            start = end + 1
            if not line:
                if self._data:
                    events.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                self._data.append(line[6:] if line[5:6] == b" " else line[5:])
        del buffer[:start]
        return events
