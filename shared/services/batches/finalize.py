"""`finalize`: the result blobs become the output and error files (each `custom_id` exactly once:
the first result written for it wins), requests that never ran become error lines
(`batch_cancelled`, `batch_expired`, or `batch_request_failed` for a poisoned chunk), and the
batch ends `completed`, `cancelled` or `expired`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from shared.clients.protocols import BlobStore
from shared.models.batches import ENDED, BatchRecord
from shared.services.auth import Principal
from shared.services.batches.blob_layout import file_blob, read_chunk, read_results
from shared.services.batches.lines import missing_line, succeeded
from shared.services.batches.state import BatchState
from shared.services.files import FileService

log = logging.getLogger("cirrus.batches")


class Finalizer:
    def __init__(
        self,
        state: BatchState,
        blobs: BlobStore,
        files: FileService,
        *,
        outputs_container: str,
        ended: Callable[[str], None],
    ) -> None:
        self._state = state
        self._blobs = blobs
        self._files = files
        self._outputs = outputs_container
        self._ended = ended

    async def finalize(self, batch: BatchRecord) -> None:
        if batch.status not in ("finalizing", "cancelling", "in_progress", "validating"):
            return
        if batch.chunks and len(batch.chunks_done) < batch.chunks:
            return  # a chunk is still running; the last one to finish sends finalize again
        winners: dict[str, dict[str, Any]] = {}
        for line in await read_results(self._blobs, self._outputs, batch.id):
            winners.setdefault(line["custom_id"], line)  # the first result written wins
        expired = time.time() >= batch.expires_at
        reason = "batch_cancelled" if batch.status == "cancelling" else "batch_expired" if expired else None
        missing: list[dict[str, Any]] = []
        for n in range(batch.chunks):
            with contextlib.suppress(LookupError):
                for request in await read_chunk(self._blobs, self._outputs, batch.id, n):
                    if request.custom_id not in winners:
                        code = (
                            "batch_request_failed"
                            if n in batch.poisoned_chunks
                            else reason or "batch_request_failed"
                        )
                        missing.append(missing_line(request, code))
        ok = [line for line in winners.values() if succeeded(line)]
        failed = [line for line in winners.values() if not succeeded(line)] + missing
        owner = Principal(key_id=batch.owner, is_master=False, team_id=batch.team)
        output_id = await self._write_file(owner, batch.id, "output", ok)
        error_id = await self._write_file(owner, batch.id, "errors", failed)
        usage = _usage(ok)
        ended = (
            "cancelled" if batch.status == "cancelling" else "expired" if missing and expired else "completed"
        )

        def end(record: BatchRecord) -> bool:
            if record.status in ENDED:
                return False
            now = int(time.time())
            record.status = ended  # type: ignore[assignment]
            setattr(record, f"{ended}_at", now)
            record.finalizing_at = record.finalizing_at or now
            record.output_file_id, record.error_file_id = output_id, error_id
            record.chunk_counts = {"all": [len(ok), len(failed)]}
            record.total = record.total or len(ok) + len(failed)
            record.usage = usage
            return True

        await self._state.update(batch.id, end)
        self._ended(batch.id)
        log.info("batch %s %s: %d succeeded, %d failed", batch.id, ended, len(ok), len(failed))

    async def _write_file(
        self, owner: Principal, batch_id: str, kind: str, lines: list[dict[str, Any]]
    ) -> str | None:
        if not lines:
            return None
        file_id = "file-" + hashlib.sha256(f"{batch_id}/{kind}".encode()).hexdigest()[:24]
        await self._files.create(
            owner,
            filename=f"{batch_id}_{kind}.jsonl",
            purpose="batch_output",
            content=_jsonl(lines),
            container=self._outputs,
            file_id=file_id,
            blob=file_blob(batch_id, kind),
            content_type="application/jsonl",
        )
        return file_id


def _usage(lines: Iterable[dict[str, Any]]) -> dict[str, int]:
    total = {"input_tokens": 0, "output_tokens": 0}
    for line in lines:
        usage = (line["response"].get("body") or {}).get("usage") or {}
        total["input_tokens"] += int(usage.get("prompt_tokens") or 0)
        total["output_tokens"] += int(usage.get("completion_tokens") or 0)
    return total


async def _jsonl(lines: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for start in range(0, len(lines), 500):
        yield "".join(json.dumps(line) + "\n" for line in lines[start : start + 500]).encode()
