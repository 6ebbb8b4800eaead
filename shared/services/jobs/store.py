"""The job item and its events in Cosmos (`jobs`, partitioned by job id).

A job is one item that is also its checkpoint. Its events are items of their own in the job's
partition, numbered, so `GET /v1/jobs/{id}/events` can replay them and resume after
`Last-Event-ID`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared.clients.protocols import DocumentStore
from shared.models.jobs import JobCreate, JobRecord
from shared.services import records
from shared.services.auth import Principal

CONTAINER = "jobs"


class JobStore:
    def __init__(self, documents: DocumentStore) -> None:
        self._documents = documents

    async def load(self, job_id: str) -> JobRecord | None:
        doc = await self._documents.read(CONTAINER, job_id, job_id) if job_id else None
        return JobRecord.model_validate(doc) if doc and doc.get("object") == "job" else None

    async def update(self, job_id: str, change: Callable[[JobRecord], bool]) -> JobRecord:
        """`change` (False: nothing to do) applied to a fresh copy, written under its ETag."""
        return await records.update(self._documents, CONTAINER, job_id, self.load, change, what="job")

    async def new(self, principal: Principal, job_id: str, spec: JobCreate, *, source: str) -> JobRecord:
        """A queued job of `principal`'s; ConflictError if the id is taken."""
        now = time.time()
        job = JobRecord(
            id=job_id,
            pk=job_id,
            type=spec.type,
            spec=spec.model_dump(mode="json"),
            created_at=int(now),
            ts=now,
            source=source,  # type: ignore[arg-type]
            **principal.stamp(),
        )
        await self.create(job)
        return job

    async def create(self, job: JobRecord) -> None:
        await self._documents.create(CONTAINER, job.model_dump(mode="json"))

    async def delete(self, job: JobRecord) -> None:
        await self._documents.delete(CONTAINER, job.id, job.pk)

    async def page(self, principal: Principal, *, limit: int, after: float | None) -> dict[str, Any]:
        return await records.owned_page(
            self._documents,
            CONTAINER,
            "job",
            principal,
            limit=limit,
            after=after,
            public=lambda row: JobRecord.model_validate(row).public(),
        )

    async def event(self, job: JobRecord, kind: str, data: dict[str, Any]) -> None:
        """Record the job's next event (numbered from `job.event_seq`, which this advances)."""
        job.event_seq += 1
        await self._documents.upsert(
            CONTAINER,
            {
                "id": f"{job.id}-e{job.event_seq:06d}",
                "pk": job.id,
                "object": "job.event",
                "seq": job.event_seq,
                "type": kind,
                "data": data,
                "created_at": time.time(),
            },
        )

    async def events_after(self, job_id: str, after: int) -> list[dict[str, Any]]:
        return await self._documents.query(
            CONTAINER,
            "SELECT * FROM c WHERE c.pk = @pk AND c.object = 'job.event' AND c.seq > @after ORDER BY c.seq",
            {"@pk": job_id, "@after": after},
            pk=job_id,
        )

    async def last_event(self, job_id: str) -> int:
        """The number of the job's latest stored event (0: none)."""
        latest = await self._documents.query(
            CONTAINER,
            "SELECT c.seq FROM c WHERE c.pk = @pk AND c.object = 'job.event' ORDER BY c.seq DESC",
            {"@pk": job_id},
            pk=job_id,
            max_items=1,
        )
        return max([0, *(int(row["seq"]) for row in latest if "seq" in row)])

    async def stalled(
        self, *, lapsed_before: float, queued_before: float, swept_before: float, limit: int
    ) -> list[str]:
        """Ids of up to `limit` jobs that look abandoned: running (or cancelling) with a lease that
        ended before `lapsed_before`, or queued since before `queued_before`; none swept since
        `swept_before`."""
        rows = await self._documents.query(
            CONTAINER,
            "SELECT c.id FROM c WHERE c.object = 'job'"
            " AND (((c.status = 'running' OR c.status = 'cancelling') AND c.lease_until < @lapsed)"
            " OR (c.status = 'queued' AND c.ts < @queued))"
            " AND (NOT IS_DEFINED(c.swept_at) OR IS_NULL(c.swept_at) OR c.swept_at < @swept)",
            {"@lapsed": lapsed_before, "@queued": queued_before, "@swept": swept_before},
            max_items=limit,
        )
        return [str(row["id"]) for row in rows]
