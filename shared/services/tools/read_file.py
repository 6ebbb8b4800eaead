"""read_file: an uploaded file the caller may see, as text the model can use.

Files are loaded as the job's principal, so a model can never read another key's upload by
guessing its id: the refusal is the same "not found" the Files API gives. At most
`file_max_bytes` are read (the blob is streamed and the stream dropped there), and the result is
cut to `max_chars`. CSV becomes a summary plus its first rows, JSON is pretty-printed, JSONL shows
its first records with a count; anything that is not UTF-8 text is refused rather than garbled.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from shared.errors import NotFoundError
from shared.services.tools.base import (
    Param,
    ToolContext,
    ToolError,
    clip,
    function_spec,
    parse_arguments,
)

log = logging.getLogger("cirrus.tools")

DEFAULT_MAX_CHARS = 20_000
MAX_CHARS = 100_000
PREVIEW_ROWS = 10  # CSV rows and JSONL records shown
_CSV_DELIMITERS = ",\t;|"
# Prose whose lines happen to hold the same number of commas is not a table.
_PLAIN_TEXT_SUFFIXES = frozenset({"txt", "text", "md", "markdown", "rst", "log"})

PARAMS = (
    Param("file_id", str, "The id of an uploaded file, e.g. `file-abc123`.", minimum=1, maximum=200),
    Param(
        "max_chars",
        int,
        f"The most characters to return (default {DEFAULT_MAX_CHARS}).",
        required=False,
        minimum=100,
        maximum=MAX_CHARS,
    ),
)


class ReadFileTool:
    name = "read_file"

    def spec(self) -> dict[str, Any]:
        return function_spec(
            self.name,
            "Read an uploaded file by id. Text is returned as is; CSV as a summary (columns, row count) "
            "and its first rows; JSON pretty-printed; JSONL as its first records and a count.",
            PARAMS,
        )

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> str:
        args = parse_arguments(arguments, PARAMS)
        file_id: str = args["file_id"]
        try:
            record = await ctx.files.load(ctx.principal, file_id)
            data, truncated = await read_capped(ctx.files.read(record), ctx.settings.file_max_bytes)
        except (NotFoundError, KeyError):  # KeyError: the record outlived its blob
            raise ToolError(f"File not found: {file_id}.") from None
        text = decode_text(data, truncated)
        header = f"File {record.filename!r} ({record.id}, {record.bytes} bytes)"
        if truncated:
            header += f"; only the first {len(data)} bytes were read"
        body = describe(record.filename, text, truncated)
        return clip(f"{header}\n\n{body}", args.get("max_chars", DEFAULT_MAX_CHARS))


async def read_capped(chunks: AsyncIterator[bytes], limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of `chunks`, and whether there were more. Stops reading at the cap."""
    buffer = bytearray()
    truncated = False
    try:
        async for chunk in chunks:
            buffer += chunk
            if len(buffer) > limit:
                del buffer[limit:]
                truncated = True
                break
    finally:
        aclose = getattr(chunks, "aclose", None)  # an async generator: release its download now
        if aclose is not None:
            await aclose()
    return bytes(buffer), truncated


def decode_text(data: bytes, truncated: bool) -> str:
    """UTF-8 text (a BOM dropped); a character cut in two by the byte cap is left out, not an error."""
    if b"\x00" in data:
        raise ToolError("This file is binary, not text; read_file only reads UTF-8 text files.")
    try:
        return codecs.getincrementaldecoder("utf-8-sig")().decode(data, final=not truncated)
    except UnicodeDecodeError:
        raise ToolError("This file is not UTF-8 text; read_file only reads UTF-8 text files.") from None


def describe(filename: str, text: str, truncated: bool) -> str:
    """The file's text as the model should see it, chosen by extension, else by its content."""
    suffix = filename.lower().rpartition(".")[2] if "." in filename else ""
    if suffix in ("jsonl", "ndjson"):
        return _jsonl(text, truncated) or text
    if suffix == "json":
        return _json(text) or f"[not valid JSON{_cut(truncated)}; shown as text]\n{text}"
    if suffix in ("csv", "tsv"):
        return _csv(text, truncated, "\t" if suffix == "tsv" else None) or text
    if suffix in _PLAIN_TEXT_SUFFIXES:
        return text
    if text.lstrip().startswith(("{", "[")):
        return _json(text) or _jsonl(text, truncated) or text
    return _csv(text, truncated, None) or text


def _json(text: str) -> str | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return "JSON:\n" + json.dumps(value, indent=2, ensure_ascii=False)


def _jsonl(text: str, truncated: bool) -> str | None:
    lines = text.splitlines()
    if truncated and lines and not text.endswith("\n"):
        lines.pop()  # the last record was cut by the byte cap
    records: list[str] = []
    bad: list[int] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            bad.append(number)
            continue
        records.append(json.dumps(value, ensure_ascii=False))
    if not records or len(bad) > len(records):
        return None
    count = f"at least {len(records)}" if truncated else str(len(records))
    out = [f"JSONL: {count} records{_cut(truncated)}."]
    if bad:
        shown = ", ".join(str(n) for n in bad[:5])
        out.append(f"{len(bad)} line(s) are not valid JSON (line {shown}{', ...' if len(bad) > 5 else ''}).")
    out.append(f"First {min(PREVIEW_ROWS, len(records))}:")
    out.extend(f"{i}. {r}" for i, r in enumerate(records[:PREVIEW_ROWS], 1))
    return "\n".join(out)


def _csv(text: str, truncated: bool, delimiter: str | None) -> str | None:
    """A summary if `text` looks like a table: every sampled line splits into the same 2+ fields."""
    if truncated:
        text = text[: text.rfind("\n") + 1] or text  # drop the row the byte cap cut
    delimiter = delimiter or _sniff_delimiter(text)
    if delimiter is None:
        return None
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if r]
    if len(rows) < 2 or len(rows[0]) < 2:
        return None
    header, data = rows[0], rows[1:]
    count = f"at least {len(data)}" if truncated else str(len(data))
    shown = io.StringIO()
    csv.writer(shown, delimiter=delimiter, lineterminator="\n").writerows(rows[: PREVIEW_ROWS + 1])
    return (
        f"CSV: {len(header)} columns ({', '.join(header)}), {count} rows after the header"
        f"{_cut(truncated)}.\nFirst {min(PREVIEW_ROWS, len(data))} rows:\n{shown.getvalue()}"
    )


def _sniff_delimiter(text: str) -> str | None:
    sample = [line for line in text.splitlines()[:6] if line.strip()]
    if len(sample) < 2:
        return None
    for delimiter in _CSV_DELIMITERS:
        widths = {len(row) for row in csv.reader(sample, delimiter=delimiter)}
        if len(widths) == 1 and widths.pop() >= 2:
            return delimiter
    return None


def _cut(truncated: bool) -> str:
    return " (the file was cut at the byte limit)" if truncated else ""
