"""Sessions: conversations stored in Cosmos that chat requests continue.

A session item holds the live tail of its history. Appends are read-modify-write guarded by the
item's ETag, retried on conflict, so concurrent turns on one session lose no message. An item is
kept under `MAX_ITEM_BYTES` (Cosmos caps items at 2 MB): when an append would pass it, the oldest
messages move to a JSON blob (`sessions/<id>/<n>.json` in the outputs container) and the item
keeps a pointer. Reading a session returns archived and live messages in order; a chat request
uses the live tail, trimmed to the model's context window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shared.clients.protocols import BlobStore, DocumentStore
from shared.errors import NotFoundError, PreconditionFailedError
from shared.models.sessions import (
    ArchivedPart,
    SessionCreate,
    SessionListPublic,
    SessionPublic,
    SessionRecord,
)
from shared.services import records
from shared.services.auth import Principal

log = logging.getLogger("cirrus.sessions")

CONTAINER = "sessions"
MAX_ITEM_BYTES = 1_500_000  # headroom under Cosmos's 2 MB item limit
APPEND_ATTEMPTS = 20
PENDING_WAIT_S = 10.0
_SYSTEM_ROLES = frozenset({"system", "developer"})

TokenCounter = Callable[[Sequence[Mapping[str, Any]]], int]


class SessionService:
    def __init__(self, documents: DocumentStore, blobs: BlobStore, archive_container: str) -> None:
        self._documents = documents
        self._blobs = blobs
        self._archive = archive_container
        # Appends still running in this worker, so the next turn waits for the previous one.
        self._pending: dict[str, asyncio.Task[Any]] = {}

    async def create(self, principal: Principal, body: SessionCreate) -> SessionPublic:
        now = time.time()
        session_id = f"sess_{uuid.uuid4().hex}"
        messages = [m.model_dump(mode="json", exclude_none=True) for m in body.messages]
        record = SessionRecord(
            id=session_id,
            pk=session_id,
            **principal.stamp(),
            title=body.title,
            metadata=body.metadata or {},
            created_at=now,
            updated_at=now,
            messages=messages,
            message_count=len(messages),
        )
        await self._documents.create(CONTAINER, record.model_dump(mode="json"))
        return _public(record, with_messages=True)

    async def get(self, principal: Principal, session_id: str) -> SessionPublic:
        record = await self.load(principal, session_id)
        return _public(record, messages=await self._full_history(record))

    async def list_page(self, principal: Principal, *, limit: int, after: str | None) -> SessionListPublic:
        """The caller's sessions, newest first, `limit` per page after the session `after`."""
        cursor = (await self.load(principal, after)).created_at if after else None
        rows, has_more = await records.owned_rows(
            self._documents, CONTAINER, "session", principal, limit=limit, after=cursor, order_by="created_at"
        )
        page = [_public(SessionRecord.model_validate(r), with_messages=False) for r in rows]
        return SessionListPublic(
            data=page,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
            has_more=has_more,
        )

    async def delete(self, principal: Principal, session_id: str) -> None:
        record = await self.load(principal, session_id)
        await self._documents.delete(CONTAINER, record.id, record.pk)
        for part in record.archived:
            await self._blobs.delete(self._archive, part.blob)

    async def load(self, principal: Principal, session_id: str) -> SessionRecord:
        """The session if the caller may see it; 404 otherwise (never a hint that it exists)."""
        return await records.load_owned(
            self._read,
            session_id,
            principal,
            not_found=f"No session found with id '{session_id}'.",
            param="session_id",
        )

    async def _read(self, session_id: str) -> SessionRecord | None:
        doc = await self._documents.read(CONTAINER, session_id, session_id)
        return SessionRecord.model_validate(doc) if doc else None

    async def history(self, principal: Principal, session_id: str) -> list[dict[str, Any]]:
        """The live history to prepend to a chat request, after any append still in flight."""
        pending = self._pending.get(session_id)
        if pending is not None and not pending.done():
            await asyncio.wait([pending], timeout=PENDING_WAIT_S)
        return list((await self.load(principal, session_id)).messages)

    async def append_turn(
        self, spawn: Callable[..., asyncio.Task[Any]], session_id: str, messages: list[dict[str, Any]]
    ) -> None:
        """Append a chat turn before its response is returned, so a read sent after the response,
        to any instance, sees it. The write is a task (behind any earlier turn of this worker still
        in flight), awaited shielded: a client that goes away meanwhile does not cancel it. A write
        that fails is logged by `spawn`'s runner; the answer is still returned."""
        task = self.append_later(spawn, session_id, messages)
        with contextlib.suppress(Exception):
            await asyncio.shield(task)

    def append_later(
        self, spawn: Callable[..., asyncio.Task[Any]], session_id: str, messages: list[dict[str, Any]]
    ) -> asyncio.Task[Any]:
        """Append in the background, remembered so this worker's next turn waits for it."""
        previous = self._pending.get(session_id)

        async def run() -> None:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            try:
                await self.append(session_id, messages)
            finally:
                if self._pending.get(session_id) is task:
                    del self._pending[session_id]

        task = spawn(run(), name=f"session-append-{session_id}")
        self._pending[session_id] = task
        return task

    async def append(self, session_id: str, messages: list[dict[str, Any]]) -> SessionRecord:
        """Add `messages` at the end, retrying on ETag conflicts; archives to Blob when large."""
        for attempt in range(APPEND_ATTEMPTS):
            doc = await self._documents.read(CONTAINER, session_id, session_id)
            if doc is None:
                raise NotFoundError(f"No session found with id '{session_id}'.", param="session_id")
            record = SessionRecord.model_validate(doc)
            record.messages = [*record.messages, *messages]
            record.message_count += len(messages)
            record.updated_at = time.time()
            await self._archive_overflow(record)
            try:
                stored = await self._documents.replace(
                    CONTAINER, record.model_dump(mode="json"), etag=record.etag
                )
            except PreconditionFailedError:
                await asyncio.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # noqa: S311 - jitter
                continue
            return SessionRecord.model_validate(stored)
        raise PreconditionFailedError(f"session {session_id} is too busy to append to; retry")

    async def _archive_overflow(self, record: SessionRecord) -> None:
        if _size(record) <= MAX_ITEM_BYTES:
            return
        # Named by position, so a retried append after an ETag conflict rewrites the same blob.
        name = f"sessions/{record.id}/{len(record.archived):06d}.json"
        record.archived.append(ArchivedPart(blob=name, messages=0))
        # Archive down to half the limit, so the next appends do not each archive again.
        sizes = [len(json.dumps(m, separators=(",", ":")).encode()) + 1 for m in record.messages]
        total = _size(record)
        moved = 0
        while moved < len(sizes) and total > MAX_ITEM_BYTES // 2:
            total -= sizes[moved]
            moved += 1
        archived = record.messages[:moved]
        await self._blobs.put(
            self._archive, name, json.dumps(archived).encode(), content_type="application/json"
        )
        record.archived[-1] = ArchivedPart(blob=name, messages=moved)
        record.messages = record.messages[moved:]
        log.info("session %s: archived %d messages to %s", record.id, moved, name)

    async def _full_history(self, record: SessionRecord) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        for part in record.archived:
            blob = await self._blobs.get(self._archive, part.blob)
            messages.extend(json.loads(blob) if blob else [])
        return messages + record.messages


def fit_to_context(
    history: Sequence[Mapping[str, Any]],
    new: Sequence[Mapping[str, Any]],
    budget: int | None,
    count: TokenCounter,
) -> list[dict[str, Any]]:
    """History + new messages within `budget` tokens: oldest turns go first; system messages and
    the new messages always stay (if those alone overflow, the provider decides)."""
    messages = [dict(m) for m in (*history, *new)]
    if budget is None:
        return messages
    costs = [count([m]) for m in messages]
    keep = [True] * len(messages)
    first_new = len(history)
    total = sum(costs)
    index = 0
    while total > budget and index < first_new:
        # Drop one whole turn: the user message and everything answering it.
        turn_end = index + 1
        while turn_end < first_new and messages[turn_end].get("role") != "user":
            turn_end += 1
        for i in range(index, turn_end):
            if messages[i].get("role") not in _SYSTEM_ROLES and keep[i]:
                keep[i] = False
                total -= costs[i]
        index = turn_end
    return [m for m, k in zip(messages, keep, strict=True) if k]


def turn_to_store(
    request_messages: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
    answer: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    """What a finished turn adds: the request's messages (a system message only if new) + answer."""
    known_system = {json.dumps(m, sort_keys=True) for m in history if m.get("role") in _SYSTEM_ROLES}
    added = [
        dict(m)
        for m in request_messages
        if m.get("role") not in _SYSTEM_ROLES or json.dumps(m, sort_keys=True) not in known_system
    ]
    return added + ([dict(answer)] if answer else [])


def _size(record: SessionRecord) -> int:
    return len(json.dumps(record.model_dump(mode="json"), separators=(",", ":")).encode())


def _public(
    record: SessionRecord, *, with_messages: bool = True, messages: list[dict[str, Any]] | None = None
) -> SessionPublic:
    return SessionPublic(
        id=record.id,
        title=record.title,
        metadata=record.metadata,
        created_at=int(record.created_at),
        updated_at=int(record.updated_at),
        message_count=record.message_count,
        messages=(messages if messages is not None else record.messages) if with_messages else None,
    )
