"""The sweeper: nothing may depend on one message send succeeding, so a timer calls `sweep(now)`
and every batch that stopped moving gets the message it is waiting for sent again.

A batch is looked at once it has not changed for `finalize_after_s` (every write of a batch sets
its `updated_at`, and a running chunk writes at least every `BatchTimings.heartbeat_s`):

- every chunk done, and the batch still `finalizing`, `cancelling` or `in_progress`: its
  `finalize` was lost; sent again;
- its completion window ended `expiry_grace_s` ago (every running chunk has stopped by then) and
  it is still running: `finalize`, which ends it `expired`, turning the requests that never ran
  into `batch_expired` lines even where their chunk messages were lost;
- no change for `stalled_after_s` (`finalize_after_s` when `cancelling`): `validating`, chunks
  written but not all sent, or cancelled before it had chunks, gets `start` again; `in_progress`
  or `cancelling` gets a `chunk` message for every chunk not done. Conservative on purpose, and
  safe anyway: a chunk whose message is in fact still queued or running skips what already has a
  result (a batch queued behind a long backlog may get its chunk messages twice).

Each batch acted on is then marked changed (`updated_at` = now), so it is sent at most once per
period however often the sweeper runs, and a second sweep at once does nothing. The query asks
for active batches not changed since the cutoff, oldest first, a page at a time and at most
`max_pages` pages a sweep; with nothing to do it is one query that returns nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from shared.clients.protocols import DocumentStore
from shared.models.batches import BatchRecord
from shared.services.batches.state import CONTAINER, BatchState

log = logging.getLogger("cirrus.batches")

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
SWEEP_SQL = (
    "SELECT c.id, c.ts, c.updated_at, c.status, c.chunks, c.chunks_done, c.fanned_out, c.expires_at"
    " FROM c WHERE c.object = 'batch' AND ARRAY_CONTAINS(@active, c.status)"
    " AND (c.updated_at ?? c.ts) < @cutoff AND c.ts >= @after ORDER BY c.ts ASC"
)


@dataclass(frozen=True)
class SweepPolicy:
    finalize_after_s: float = 120.0  # a lost finalize, or a cancelled batch whose chunks are gone
    stalled_after_s: float = 1200.0  # longer than a worker's message lease (10 min) with room
    expiry_grace_s: float = 300.0  # after its window, for running chunks to see it and stop
    page_size: int = 100
    max_pages: int = 10


class _Row(BaseModel):
    """The fields of a batch the sweeper decides on."""

    model_config = ConfigDict(extra="ignore")

    id: str
    ts: float
    updated_at: float | None = None
    status: str
    chunks: int = 0
    chunks_done: list[int] = Field(default_factory=list)
    fanned_out: bool = False
    expires_at: int


class Sweeper:
    def __init__(self, state: BatchState, documents: DocumentStore, policy: SweepPolicy) -> None:
        self._state = state
        self._documents = documents
        self._policy = policy

    async def sweep(self, now: float) -> dict[str, int]:
        """Re-drive the batches that stopped moving; how many messages of each kind were sent."""
        policy = self._policy
        cutoff = now - policy.finalize_after_s
        sent = {"finalize": 0, "start": 0, "chunk": 0}
        seen: set[str] = set()
        after = 0.0
        for _ in range(policy.max_pages):
            params = {"@active": list(ACTIVE), "@cutoff": cutoff, "@after": after}
            rows = await self._documents.query(CONTAINER, SWEEP_SQL, params, max_items=policy.page_size)
            fresh = [_Row.model_validate(row) for row in rows if row["id"] not in seen]
            for row in fresh:
                seen.add(row.id)
                after = max(after, row.ts)
                if row.status not in ACTIVE or (row.updated_at or row.ts) >= cutoff:
                    continue  # the query's own conditions, for stores that do not run SQL
                messages = self._messages(row, now)
                for kind, chunk in messages:
                    await self._state.send(kind, row.id, chunk)
                    sent[kind] += 1
                if messages:
                    await self._mark_swept(row, now)
            if len(rows) < policy.page_size or not fresh:
                break
        if any(sent.values()):
            log.info("batch sweep re-sent %s", sent)
        return sent

    def _messages(self, row: _Row, now: float) -> list[tuple[str, int | None]]:
        """What the batch waits for, if it has waited too long."""
        policy = self._policy
        idle = now - (row.updated_at or row.ts)
        all_done = bool(row.chunks) and len(set(row.chunks_done)) >= row.chunks
        running = row.status in ("in_progress", "cancelling", "finalizing")
        if running and (all_done or now >= row.expires_at + policy.expiry_grace_s):
            return [("finalize", None)]
        if idle < (policy.finalize_after_s if row.status == "cancelling" else policy.stalled_after_s):
            return []
        if row.status == "validating" or not row.chunks or not row.fanned_out:
            return [("start", None)]  # start also ends a batch cancelled before it had chunks
        if row.status in ("in_progress", "cancelling"):
            return [("chunk", n) for n in range(row.chunks) if n not in row.chunks_done]
        return []

    async def _mark_swept(self, row: _Row, now: float) -> None:
        def swept(batch: BatchRecord) -> bool:
            if batch.status != row.status:
                return False  # it moved meanwhile
            batch.updated_at = now
            return True

        await self._state.update(row.id, swept)
