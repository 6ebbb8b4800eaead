"""Stored responses in Cosmos (`responses`, partitioned by the response id, kept 30 days).

A record holds its own input items and output; the conversation before it is the responses named
in its `chain`, read in one round of point reads. Input items that would take the record past
`MAX_ITEM_BYTES` (Cosmos caps items at 2 MB; a request body may be 8 MB) are written to a blob in
the outputs container, `responses/<id>/input.json`, and read back from there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from shared.clients.protocols import BlobStore, DocumentStore
from shared.models.responses import ResponseRecord
from shared.services import records
from shared.services.auth import Principal

log = logging.getLogger("cirrus.responses")

CONTAINER = "responses"
TTL_S = 30 * 24 * 3600  # as OpenAI keeps responses: 30 days
MAX_ITEM_BYTES = 1_500_000  # headroom under Cosmos's 2 MB item limit
MAX_CHAIN = 500  # earlier responses a conversation reads back; older ones are left out
READS_AT_ONCE = 16


class ResponseStore:
    def __init__(self, documents: DocumentStore, blobs: BlobStore, blob_container: str) -> None:
        self._documents = documents
        self._blobs = blobs
        self._container = blob_container

    async def load(self, response_id: str) -> ResponseRecord | None:
        doc = await self._documents.read(CONTAINER, response_id, response_id) if response_id else None
        return ResponseRecord.model_validate(doc) if doc and doc.get("object") == "response" else None

    async def load_owned(self, principal: Principal, response_id: str) -> ResponseRecord:
        """The response if the caller may see it; 404 otherwise (never a hint that it exists)."""
        return await records.load_owned(
            self.load,
            response_id,
            principal,
            not_found=f"Response with id '{response_id}' not found.",
            param="response_id",
        )

    async def create(self, record: ResponseRecord) -> ResponseRecord:
        record.ttl = TTL_S
        doc = record.model_dump(mode="json")
        if len(orjson.dumps(doc)) > MAX_ITEM_BYTES:
            name = f"responses/{record.id}/input.json"
            await self._blobs.put(
                self._container, name, orjson.dumps(record.input_items), content_type="application/json"
            )
            record.input_blob, record.input_items = name, []
            doc = record.model_dump(mode="json")
        stored = await self._documents.create(CONTAINER, doc)
        return ResponseRecord.model_validate(stored)

    async def update(self, response_id: str, change: Callable[[ResponseRecord], bool]) -> ResponseRecord:
        """`change` (False: nothing to do) applied to a fresh copy, written under its ETag."""
        return await records.update(
            self._documents, CONTAINER, response_id, self.load, change, what="response"
        )

    async def delete(self, record: ResponseRecord) -> None:
        await self._documents.delete(CONTAINER, record.id, record.pk)
        if record.input_blob:
            await self._blobs.delete(self._container, record.input_blob)

    async def input_items(self, record: ResponseRecord) -> list[dict[str, Any]]:
        """The record's own input items, from the record or its blob."""
        if record.input_blob is None:
            return list(record.input_items)
        blob = await self._blobs.get(self._container, record.input_blob)
        return list(orjson.loads(blob)) if blob else []

    async def history(self, principal: Principal, chain: list[str]) -> list[dict[str, Any]]:
        """The items of the conversation before a response: each response of its `chain` (those
        still stored that the caller may see), input then output, oldest first."""
        limit = asyncio.Semaphore(READS_AT_ONCE)

        async def read(response_id: str) -> ResponseRecord | None:
            async with limit:
                return await self.load(response_id)

        turns = await asyncio.gather(*(read(response_id) for response_id in chain))
        items: list[dict[str, Any]] = []
        for turn in turns:
            if turn is None or not principal.can_see(turn.owner, turn.team):
                continue  # deleted, or expired: the conversation goes on without it
            items += await self.input_items(turn)
            items += turn.output
        return items


def chain_after(previous: ResponseRecord) -> list[str]:
    """The `chain` of a response that follows `previous`."""
    return [*previous.chain, previous.id][-MAX_CHAIN:]
