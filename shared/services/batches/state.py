"""A batch's Cosmos item and its queue messages: what every step reads, changes and sends."""

from __future__ import annotations

import time
from collections.abc import Callable

from shared.clients.protocols import DocumentStore, QueueStore
from shared.models.batches import BatchMessage, BatchRecord
from shared.services import records

CONTAINER = "batches"


class BatchState:
    """Loads and changes batch items (ETag-guarded) and sends the batch queue's messages."""

    def __init__(self, documents: DocumentStore, queues: QueueStore, *, queue: str) -> None:
        self.documents = documents
        self._queues = queues
        self._queue = queue

    async def load(self, batch_id: str) -> BatchRecord | None:
        doc = await self.documents.read(CONTAINER, batch_id, batch_id) if batch_id else None
        return BatchRecord.model_validate(doc) if doc else None

    async def update(self, batch_id: str, change: Callable[[BatchRecord], bool]) -> BatchRecord:
        """Apply `change` (False: nothing to do) to a fresh copy, retried while others write first.
        A write sets `updated_at` to now, unless `change` set it."""

        def changed(batch: BatchRecord) -> bool:
            before = batch.updated_at
            if not change(batch):
                return False
            if batch.updated_at == before:
                batch.updated_at = time.time()
            return True

        return await records.update(self.documents, CONTAINER, batch_id, self.load, changed, what="batch")

    async def send(self, kind: str, batch_id: str, chunk: int | None = None) -> None:
        message = BatchMessage(kind=kind, batch_id=batch_id, chunk=chunk)  # type: ignore[arg-type]
        await self._queues.send(self._queue, message.model_dump(exclude_none=True))


def all_chunks_done(batch: BatchRecord) -> bool:
    return bool(batch.chunks) and len(batch.chunks_done) >= batch.chunks


def awaits_finalize(batch: BatchRecord) -> bool:
    """Every chunk is done and the batch waits for its `finalize` message to end it."""
    return batch.status in ("finalizing", "cancelling") and len(batch.chunks_done) >= batch.chunks
