"""What `/v1/batches` does: create a batch (its `start` message goes on the queue), read, list and
cancel one. The work itself happens on the queue (`validate`, `chunk_runner`, `finalize`)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from shared.errors import ConflictError, InvalidRequestError
from shared.models.batches import BatchCreate, BatchRecord
from shared.services import records
from shared.services.auth import Principal
from shared.services.batches.state import CONTAINER, BatchState, all_chunks_done
from shared.services.files import FileService

log = logging.getLogger("cirrus.batches")


class BatchApi:
    def __init__(self, state: BatchState, files: FileService, *, window_seconds: int) -> None:
        self._state = state
        self._files = files
        self._window = window_seconds

    async def create(self, principal: Principal, body: BatchCreate) -> dict[str, Any]:
        source = await self._files.load(principal, body.input_file_id)
        if source.purpose != "batch":
            raise InvalidRequestError(
                f"File {body.input_file_id} was uploaded with purpose '{source.purpose}', not 'batch'.",
                param="input_file_id",
            )
        now = time.time()
        record = BatchRecord(
            id=f"batch_{uuid.uuid4().hex[:24]}",
            pk="",
            endpoint=body.endpoint,
            input_file_id=body.input_file_id,
            completion_window=body.completion_window,
            created_at=int(now),
            ts=now,
            updated_at=now,
            expires_at=int(now + self._window),
            metadata=body.metadata,
            **principal.stamp(),
        )
        record.pk = record.id
        documents = self._state.documents
        await documents.create(CONTAINER, record.model_dump(mode="json"))
        try:
            await self._state.send("start", record.id)
        except Exception:
            await documents.delete(CONTAINER, record.id, record.pk)
            raise
        log.info("batch %s created (%s, file %s)", record.id, record.endpoint, record.input_file_id)
        return record.public()

    async def get(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        return (await self._load_for(principal, batch_id)).public()

    async def list_page(self, principal: Principal, *, limit: int, after: str | None) -> dict[str, Any]:
        cursor = (await self._load_for(principal, after)).ts if after else None
        return await records.owned_page(
            self._state.documents,
            CONTAINER,
            "batch",
            principal,
            limit=limit,
            after=cursor,
            public=lambda row: BatchRecord.model_validate(row).public(),
        )

    async def cancel(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        await self._load_for(principal, batch_id)

        def cancel(batch: BatchRecord) -> bool:
            if batch.status == "cancelling":
                return False
            if batch.status not in ("validating", "in_progress"):
                raise ConflictError(f"Cannot cancel a batch with status '{batch.status}'.")
            batch.status = "cancelling"
            batch.cancelling_at = int(time.time())
            return True

        batch = await self._state.update(batch_id, cancel)
        if all_chunks_done(batch):
            await self._state.send("finalize", batch_id)  # nothing is running to notice the cancel
        log.info("batch %s cancelling", batch_id)
        return batch.public()

    async def _load_for(self, principal: Principal, batch_id: str) -> BatchRecord:
        return await records.load_owned(
            self._state.load,
            batch_id,
            principal,
            not_found=f"No batch found with id '{batch_id}'.",
            param="batch_id",
        )
