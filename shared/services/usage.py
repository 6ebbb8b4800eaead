"""Usage: one record per model call, written after the response, never lost, and summarised.

Records are buffered for `flush_interval` seconds, then stored as one Cosmos item per caller
key holding up to `RECORDS_PER_ITEM` records (`usage`, partitioned by key id; queries read the
records with `JOIN r IN c.records`). The Cosmos SDK spends ~3 ms of CPU per write, so one write
per flush instead of one per request keeps that cost off the requests that follow, and costs
fewer request units. An item's id is derived from its records' ids, so a retried or repeated
write lands on the same item.

A write that fails is parked on the usage queue, whose queue-triggered function
(`usage_queue.py`) writes it later. If the queue is unreachable too, both are retried with
backoff for a few minutes, and as a last resort the item is logged in full at ERROR (records
carry no prompt, key or secret) so it can be replayed from the logs. The Functions worker gives
apps no shutdown hook, so a worker that stops or crashes can lose its last `flush_interval` of
records; `Container.aclose()` flushes where a host does call it.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from shared.clients.protocols import DocumentStore, QueueStore
from shared.errors import NotFoundError
from shared.models.usage import (
    GroupBy,
    UsageGroup,
    UsageRecord,
    UsageRecordFilter,
    UsageRecordListPublic,
    UsageSeriesPoint,
    UsageSeriesPublic,
    UsageSummaryPublic,
    UsageTotals,
)
from shared.services.auth import Principal
from shared.services.background import Background

log = logging.getLogger("cirrus.usage")

CONTAINER = "usage"
RETRY_DELAYS_S = (0.5, 2, 5, 15, 30, 60, 120)  # about four minutes in all


FLUSH_INTERVAL_S = 0.5
# About 600 bytes a record: an item, and a parked queue message (48 KiB at most), stay small.
RECORDS_PER_ITEM = 40


class UsageService:
    def __init__(
        self,
        documents: DocumentStore,
        queues: QueueStore,
        queue_name: str,
        background: Background,
        *,
        flush_interval: float = FLUSH_INTERVAL_S,
        retry_delays: tuple[float, ...] = RETRY_DELAYS_S,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._documents = documents
        self._queues = queues
        self._queue = queue_name
        self._background = background
        self._flush_interval = flush_interval
        self._delays = retry_delays
        self._sleep = sleep
        self._buffer: list[UsageRecord] = []
        self._flusher: asyncio.Task[None] | None = None

    def submit(self, record: UsageRecord) -> None:
        """Queue `record` for the next flush (started here if none is pending)."""
        self._buffer.append(record)
        if self._flusher is None or self._flusher.done():
            self._flusher = self._background.spawn(self._flush_soon(), name="usage-flush")

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._flush_interval)
        while self._buffer:
            batch, self._buffer = self._buffer, []
            await asyncio.gather(*(self.store(item) for item in usage_items(batch)))

    async def store(self, item: dict[str, Any]) -> str:
        """Store one usage item durably; returns where it went ("cosmos", "queue" or "log")."""
        for delay in (0.0, *self._delays):
            if delay:
                await self._sleep(delay)
            try:
                await self._documents.upsert(CONTAINER, item)
                return "cosmos"
            except Exception as exc:
                log.warning("usage write failed (%s); parking it on %s", type(exc).__name__, self._queue)
            try:
                await self._queues.send(self._queue, {"usage_item": item})
                return "queue"
            except Exception as exc:
                log.warning("parking usage failed (%s); will retry", type(exc).__name__)
        log.error("usage item could not be stored; replay it from this line: %s", json.dumps(item))
        return "log"

    async def store_parked(self, message: Mapping[str, Any]) -> None:
        """Write a parked item (the usage queue's handler). Raises so the queue retries."""
        item = message["usage_item"]
        records = [UsageRecord.model_validate(r) for r in item["records"]]
        (rebuilt,) = usage_items(records)  # re-derived, so a tampered or stale id cannot stick
        await self._documents.upsert(CONTAINER, rebuilt)

    async def summary(
        self, principal: Principal, start: float, end: float, group_by: GroupBy | None
    ) -> UsageSummaryPublic:
        """Totals over [start, end): the caller's own records, or everyone's for the master key."""
        # Folded as the pages arrive: memory holds one page and the groups, not the window's records.
        total = UsageTotals()
        groups: dict[str | None, UsageGroup] = {}
        async for record in self._records(principal, start, end):
            total.add(record)
            key = _group_key(record, group_by) if group_by else None
            groups.setdefault(key, UsageGroup(group=key)).add(record)
        data = sorted(groups.values(), key=lambda g: (g.group is None, g.group or "")) if group_by else []
        return UsageSummaryPublic(start=int(start), end=int(end), group_by=group_by, data=data, total=total)

    async def series(
        self, principal: Principal, start: float, end: float, group_by: str | None
    ) -> UsageSeriesPublic:
        """Totals per UTC day over [start, end), per model or key when asked: what charts draw."""
        points: dict[tuple[str, str | None], UsageSeriesPoint] = {}
        async for record in self._records(principal, start, end):
            group = {"model": record.model, "key": record.key_id}.get(group_by or "")
            point = points.get((record.day, group))
            if point is None:
                point = points[(record.day, group)] = UsageSeriesPoint(day=record.day, group=group)
            point.add(record)
        data = [points[k] for k in sorted(points, key=lambda k: (k[0], k[1] is None, k[1] or ""))]
        return UsageSeriesPublic(group_by=group_by, data=data)  # type: ignore[arg-type]

    async def records_page(
        self,
        principal: Principal,
        start: float,
        end: float,
        where: UsageRecordFilter,
        *,
        limit: int,
        after: str | None = None,
    ) -> UsageRecordListPublic:
        """The newest `limit` records in [start, end) matching `where` (after the record `after`).

        Read a page of Cosmos results at a time; memory holds `limit + 1` records, whatever the
        window holds."""
        cursor: tuple[float, str] | None = None
        if after is not None:
            found = [r async for r in self._records(principal, start, end, record_id=after)]
            if not found:
                raise NotFoundError(f"No usage record {after[:80]!r} in this window.", param="after")
            cursor = _newest_first(found[0])
        keep = limit + 1
        newest: list[UsageRecord] = []
        async for record in self._records(principal, start, end, where):
            if cursor is None or _newest_first(record) > cursor:
                newest.append(record)
                if len(newest) >= 2 * keep:  # trimmed now and then: bounded, and no sort per record
                    newest = heapq.nsmallest(keep, newest, key=_newest_first)
        newest = heapq.nsmallest(keep, newest, key=_newest_first)
        page = newest[:limit]
        return UsageRecordListPublic(
            data=page, has_more=len(newest) > limit, last_id=page[-1].id if page else None
        )

    async def _records(
        self,
        principal: Principal,
        start: float,
        end: float,
        where: UsageRecordFilter | None = None,
        *,
        record_id: str | None = None,
    ) -> AsyncIterator[UsageRecord]:
        """The caller's records in [start, end) (everyone's for the master key), a page at a time."""
        sql = (
            "SELECT VALUE r FROM c JOIN r IN c.records WHERE c.last_at >= @start AND c.first_at < @end"
            " AND r.created_at >= @start AND r.created_at < @end"
        )
        params: dict[str, Any] = {"@start": start, "@end": end}
        pk = None
        if principal.is_master:
            pass
        elif principal.team_id is not None:  # the team's records: every key of it
            sql += " AND (c.pk = @pk OR c.team = @team)"
            params.update({"@pk": principal.key_id, "@team": principal.team_id})
        else:
            sql += " AND c.pk = @pk"
            params["@pk"] = pk = principal.key_id
        filters = {"id": record_id, **(where.model_dump() if where is not None else {})}
        for field, value in filters.items():
            if value is not None:
                sql += f" AND r.{field} = @f_{field}"
                params[f"@f_{field}"] = value
        async for row in self._documents.iterate(CONTAINER, sql, params, pk=pk):
            yield UsageRecord.model_validate(row)


def _newest_first(record: UsageRecord) -> tuple[float, str]:
    return (-record.created_at, record.id)


def usage_items(records: list[UsageRecord]) -> list[dict[str, Any]]:
    """Cosmos items for `records`: grouped by key id (and team), `RECORDS_PER_ITEM` at most each."""
    by_key: dict[tuple[str, str | None], list[UsageRecord]] = {}
    for record in records:
        by_key.setdefault((record.pk, record.team_id), []).append(record)
    items = []
    for (pk, team), owned in by_key.items():
        for start in range(0, len(owned), RECORDS_PER_ITEM):
            chunk = owned[start : start + RECORDS_PER_ITEM]
            digest = hashlib.sha256("|".join(r.id for r in chunk).encode()).hexdigest()[:32]
            items.append(
                {
                    "id": f"usage_{digest}",
                    "pk": pk,
                    "team": team,
                    "object": "usage.items",
                    "first_at": min(r.created_at for r in chunk),
                    "last_at": max(r.created_at for r in chunk),
                    "records": [r.model_dump(mode="json") for r in chunk],
                }
            )
    return items


def _group_key(record: UsageRecord, group_by: GroupBy) -> str | None:
    return {
        "model": record.model,
        "day": record.day,
        "session": record.session_id,
        "key": record.key_id,
        "team": record.team_id,
    }[group_by]


def day_of(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
