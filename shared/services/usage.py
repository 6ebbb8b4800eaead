"""Usage: one record per model call, written after the response, never lost, and summarised.

A record is written to Cosmos in the background. If that fails it is parked on the usage queue,
whose queue-triggered function (`usage_queue.py`) writes it later; the record's id is fixed up
front, so a write that is retried or delivered twice lands on the same item. If the queue is
unreachable too, both are retried with backoff for a few minutes, and as a last resort the record
is logged in full at ERROR (it carries no prompt, key or secret) so it can be replayed from logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from shared.clients.protocols import DocumentStore, QueueStore
from shared.models.usage import GroupBy, UsageGroup, UsageRecord, UsageSummaryPublic, UsageTotals
from shared.services.auth import Principal

log = logging.getLogger("cirrus.usage")

CONTAINER = "usage"
RETRY_DELAYS_S = (0.5, 2, 5, 15, 30, 60, 120)  # about four minutes in all


class UsageService:
    def __init__(
        self,
        documents: DocumentStore,
        queues: QueueStore,
        queue_name: str,
        *,
        retry_delays: tuple[float, ...] = RETRY_DELAYS_S,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._documents = documents
        self._queues = queues
        self._queue = queue_name
        self._delays = retry_delays
        self._sleep = sleep

    async def record(self, record: UsageRecord) -> str:
        """Store `record` durably; returns where it went ("cosmos", "queue" or "log")."""
        doc = record.model_dump(mode="json")
        for delay in (0.0, *self._delays):
            if delay:
                await self._sleep(delay)
            try:
                await self._documents.upsert(CONTAINER, doc)
                return "cosmos"
            except Exception as exc:
                log.warning("usage write failed (%s); parking it on %s", type(exc).__name__, self._queue)
            try:
                await self._queues.send(self._queue, {"usage": doc})
                return "queue"
            except Exception as exc:
                log.warning("parking usage failed (%s); will retry", type(exc).__name__)
        log.error("usage record could not be stored; replay it from this line: %s", json.dumps(doc))
        return "log"

    async def store_parked(self, message: Mapping[str, Any]) -> None:
        """Write a parked record (the usage queue's handler). Raises so the queue retries."""
        record = UsageRecord.model_validate(message["usage"])
        await self._documents.upsert(CONTAINER, record.model_dump(mode="json"))

    async def summary(
        self, principal: Principal, start: float, end: float, group_by: GroupBy | None
    ) -> UsageSummaryPublic:
        """Totals over [start, end): the caller's own records, or everyone's for the master key."""
        sql = "SELECT * FROM c WHERE c.created_at >= @start AND c.created_at < @end"
        params: dict[str, Any] = {"@start": start, "@end": end}
        pk = None
        if not principal.is_master:
            sql += " AND c.pk = @pk"
            params["@pk"] = pk = principal.key_id
        rows = await self._documents.query(CONTAINER, sql, params, pk=pk)
        total = UsageTotals()
        groups: dict[str | None, UsageGroup] = {}
        for row in rows:
            record = UsageRecord.model_validate(row)
            total.add(record)
            key = _group_key(record, group_by) if group_by else None
            groups.setdefault(key, UsageGroup(group=key)).add(record)
        data = sorted(groups.values(), key=lambda g: (g.group is None, g.group or "")) if group_by else []
        return UsageSummaryPublic(start=int(start), end=int(end), group_by=group_by, data=data, total=total)


def _group_key(record: UsageRecord, group_by: GroupBy) -> str | None:
    return {
        "model": record.model,
        "day": record.day,
        "session": record.session_id,
        "key": record.key_id,
    }[group_by]


def day_of(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def now() -> float:
    return time.time()
