"""`finalize`: the result blobs become the output and error files (each `custom_id` exactly once:
the first result written for it wins), requests that never ran become error lines
(`batch_cancelled`, `batch_expired`, or `batch_request_failed` for a poisoned chunk), and the
batch ends `completed`, `cancelled` or `expired`.

Memory stays bounded whatever the batch's size: both files are streamed to Blob as they are
written, from the result blobs read one at a time, holding only the set of custom_ids already
written (the output file is one pass over the results, the error file a second pass over the same
blobs, then the chunks for requests that never ran). Counts and usage are added up as lines go by.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from shared.clients.protocols import BlobStore
from shared.models.batches import ENDED, BatchRecord
from shared.services.auth import Principal
from shared.services.batches.blob_layout import file_blob, read_chunk, read_results, result_names
from shared.services.batches.lines import missing_line, succeeded
from shared.services.batches.state import BatchState
from shared.services.files import FileService

log = logging.getLogger("cirrus.batches")

PIECE_BYTES = 64 * 1024  # lines are handed to Blob in pieces of about this size


@dataclass
class _Tally:
    """What the files held, added up while they were written."""

    succeeded: int = 0
    failed: int = 0  # results that were errors
    missing: int = 0  # requests that never got a result
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0})

    def add_usage(self, line: dict[str, Any]) -> None:
        usage = (line["response"].get("body") or {}).get("usage") or {}
        self.usage["input_tokens"] += int(usage.get("prompt_tokens") or 0)
        self.usage["output_tokens"] += int(usage.get("completion_tokens") or 0)


class Finalizer:
    def __init__(
        self,
        state: BatchState,
        blobs: BlobStore,
        files: FileService,
        *,
        outputs_container: str,
        ended: Callable[[str], None],
        expiry_grace_s: float,
    ) -> None:
        self._state = state
        self._blobs = blobs
        self._files = files
        self._outputs = outputs_container
        self._ended = ended
        self._expiry_grace_s = expiry_grace_s

    async def finalize(self, batch: BatchRecord) -> None:
        if batch.status not in ("finalizing", "cancelling", "in_progress", "validating"):
            return
        expired = time.time() >= batch.expires_at
        chunks_running = batch.chunks and len(batch.chunks_done) < batch.chunks
        if chunks_running and time.time() < batch.expires_at + self._expiry_grace_s:
            # The last chunk to finish sends finalize again. Past the window and its grace, every
            # running chunk has stopped: the chunks not done lost their messages (the sweeper sent
            # this one), and their requests end expired.
            return
        # Both passes read the same result blobs (each is written once, never changed), so they
        # agree on which result won for every custom_id.
        names = await result_names(self._blobs, self._outputs, batch.id)
        reason = "batch_cancelled" if batch.status == "cancelling" else "batch_expired" if expired else None
        tally = _Tally()
        owner = Principal(key_id=batch.owner, is_master=False, team_id=batch.team)
        output_id = await self._write_file(owner, batch.id, "output", self._output_lines(names, tally))
        error_id = await self._write_file(
            owner, batch.id, "errors", self._error_lines(batch, names, reason, tally)
        )
        failed = tally.failed + tally.missing
        ended = (
            "cancelled"
            if batch.status == "cancelling"
            else "expired"
            if tally.missing and expired
            else "completed"
        )

        def end(record: BatchRecord) -> bool:
            if record.status in ENDED:
                return False
            now = int(time.time())
            record.status = ended  # type: ignore[assignment]
            setattr(record, f"{ended}_at", now)
            record.finalizing_at = record.finalizing_at or now
            record.output_file_id, record.error_file_id = output_id, error_id
            record.chunk_counts = {"all": [tally.succeeded, failed]}
            record.total = record.total or tally.succeeded + failed
            record.usage = tally.usage
            return True

        await self._state.update(batch.id, end)
        self._ended(batch.id)
        log.info("batch %s %s: %d succeeded, %d failed", batch.id, ended, tally.succeeded, failed)

    async def _winners(self, names: list[str], seen: set[str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The first result saved for each custom_id, as saved and parsed; `seen` fills up."""
        async for text, line in read_results(self._blobs, self._outputs, names):
            if line["custom_id"] not in seen:
                seen.add(line["custom_id"])
                yield text, line

    async def _output_lines(self, names: list[str], tally: _Tally) -> AsyncIterator[str]:
        async for text, line in self._winners(names, set()):
            if succeeded(line):
                tally.succeeded += 1
                tally.add_usage(line)
                yield text
            else:
                tally.failed += 1

    async def _error_lines(
        self, batch: BatchRecord, names: list[str], reason: str | None, tally: _Tally
    ) -> AsyncIterator[str]:
        seen: set[str] = set()
        async for text, line in self._winners(names, seen):
            if not succeeded(line):
                yield text
        for n in range(batch.chunks):
            code = "batch_request_failed" if n in batch.poisoned_chunks else reason or "batch_request_failed"
            with contextlib.suppress(LookupError):
                async for request in read_chunk(self._blobs, self._outputs, batch.id, n):
                    if request.custom_id not in seen:
                        tally.missing += 1
                        yield json.dumps(missing_line(request, code))

    async def _write_file(
        self, owner: Principal, batch_id: str, kind: str, lines: AsyncIterator[str]
    ) -> str | None:
        """The file of these lines, streamed to Blob; None (and no file) when there are none."""
        pieces = _pieces(lines)
        first = await anext(pieces, None)
        if first is None:
            return None
        file_id = "file-" + hashlib.sha256(f"{batch_id}/{kind}".encode()).hexdigest()[:24]
        await self._files.create(
            owner,
            filename=f"{batch_id}_{kind}.jsonl",
            purpose="batch_output",
            content=_prepend(first, pieces),
            container=self._outputs,
            file_id=file_id,
            blob=file_blob(batch_id, kind),
            content_type="application/jsonl",
        )
        return file_id


async def _pieces(lines: AsyncIterator[str]) -> AsyncIterator[bytes]:
    """JSON lines joined into pieces of about PIECE_BYTES."""
    piece: list[bytes] = []
    size = 0
    async for text in lines:
        data = text.encode() + b"\n"
        piece.append(data)
        size += len(data)
        if size >= PIECE_BYTES:
            yield b"".join(piece)
            piece, size = [], 0
    if piece:
        yield b"".join(piece)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for piece in rest:
        yield piece
