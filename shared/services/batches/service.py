"""`BatchService`: the batch API and the batch queue's handlers, wired from the modules of this
package (see its docstring)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from shared.clients.protocols import BlobStore, DocumentStore, QueueStore
from shared.models.batches import ENDED, BatchCreate, BatchError, BatchMessage, BatchRecord
from shared.services.auth import Principal
from shared.services.batches.api import BatchApi
from shared.services.batches.chunk_runner import BatchTimings, ChunkRunner, Gateway, OwnerLookup, Sleep
from shared.services.batches.finalize import Finalizer
from shared.services.batches.state import BatchState
from shared.services.batches.sweep import Sweeper, SweepPolicy
from shared.services.batches.validate import DEFAULT_MAX_LINE_BYTES, BatchStarter
from shared.services.files import FileService
from shared.services.limits import KeyLimiter
from shared.services.model_catalog import ModelCatalog

log = logging.getLogger("cirrus.batches")


class BatchService:
    def __init__(
        self,
        documents: DocumentStore,
        blobs: BlobStore,
        queues: QueueStore,
        files: FileService,
        catalog: ModelCatalog,
        *,
        queue: str,
        outputs_container: str,
        chunk_size: int,
        concurrency: int,
        window_seconds: int,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        gateway: Gateway,
        owner: OwnerLookup,
        limiter: KeyLimiter | None = None,
        timings: BatchTimings | None = None,
        sweep: SweepPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        sweep = sweep or SweepPolicy()
        self._state = BatchState(documents, queues, queue=queue)
        self._api = BatchApi(self._state, files, window_seconds=window_seconds)
        self._runner = ChunkRunner(
            self._state,
            blobs,
            catalog,
            outputs_container=outputs_container,
            concurrency=concurrency,
            gateway=gateway,
            owner=owner,
            limiter=limiter,
            timings=timings or BatchTimings(),
            sleep=sleep,
        )
        self._finalizer = Finalizer(
            self._state,
            blobs,
            files,
            outputs_container=outputs_container,
            ended=self._runner.forget,
            expiry_grace_s=sweep.expiry_grace_s,
        )
        self._sweeper = Sweeper(self._state, documents, sweep)
        self._starter = BatchStarter(
            self._state,
            blobs,
            files,
            catalog,
            outputs_container=outputs_container,
            chunk_size=chunk_size,
            max_line_bytes=max_line_bytes,
            owner=owner,
            finalize=self._finalizer.finalize,
        )

    # --- the HTTP API ---------------------------------------------------------------------

    async def create(self, principal: Principal, body: BatchCreate) -> dict[str, Any]:
        return await self._api.create(principal, body)

    async def get(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        return await self._api.get(principal, batch_id)

    async def list_page(self, principal: Principal, *, limit: int, after: str | None) -> dict[str, Any]:
        return await self._api.list_page(principal, limit=limit, after=after)

    async def cancel(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        return await self._api.cancel(principal, batch_id)

    # --- the queue ------------------------------------------------------------------------

    async def handle(self, raw: Any) -> None:
        """One message of the batch queue. Raises to have the host retry it."""
        message = BatchMessage.model_validate(raw)
        batch = await self._state.load(message.batch_id)
        if batch is None:
            log.warning("batch %s: no such batch; message dropped", message.batch_id)
            return
        if message.kind == "start":
            await self._starter.start(batch)
        elif message.kind == "chunk" and message.chunk is not None:
            await self._runner.run(batch, message.chunk)
        elif message.kind == "finalize":
            await self._finalizer.finalize(batch)

    async def sweep(self, now: float | None = None) -> dict[str, int]:
        """Send again the messages that batches stuck for long wait for (see `sweep`); for a timer.
        Returns how many of each kind were sent."""
        return await self._sweeper.sweep(time.time() if now is None else now)

    async def handle_poison(self, raw: Any) -> None:
        """A message that failed every delivery: fail what it stood for, so the batch still ends."""
        try:
            message = BatchMessage.model_validate(raw)
        except Exception:
            log.error("unreadable message on the batch poison queue dropped")
            return
        batch = await self._state.load(message.batch_id)
        if batch is None or batch.status in ENDED:
            return
        log.error("batch %s: %s message poisoned", batch.id, message.kind)
        if message.kind == "chunk" and message.chunk is not None:
            await self._runner.finished(batch.id, message.chunk, None, poisoned=True)
            return
        failure = BatchError(
            code="batch_failed", message=f"Cirrus could not {message.kind} this batch; see the server log."
        )

        def fail(record: BatchRecord) -> bool:
            if record.status in ENDED:
                return False
            record.status, record.failed_at, record.errors = "failed", int(time.time()), [failure]
            return True

        await self._state.update(batch.id, fail)
