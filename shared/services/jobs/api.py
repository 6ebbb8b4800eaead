"""The jobs HTTP API: create (checked, stored, queued), get, list, cancel, and the event stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from shared.clients.protocols import QueueStore
from shared.errors import ConflictError, InvalidRequestError
from shared.models.jobs import ENDED, JobCreate, JobRecord
from shared.services import records
from shared.services.auth import Principal
from shared.services.jobs.notify import Notifier, reply_queue_allowed
from shared.services.jobs.store import JobStore
from shared.services.model_catalog import ModelCatalog
from shared.services.tools import BUILTIN_TOOLS, Tool, ToolSettings

log = logging.getLogger("cirrus.jobs")

EVENT_POLL_S = 0.5
EVENT_STREAM_S = 200.0  # under Azure's 230 s HTTP limit; clients resume with Last-Event-ID

ToolFactory = Callable[[Sequence[str], ToolSettings], dict[str, Tool]]


class JobChecks:
    """What a job is checked against before it is accepted, over HTTP or from the queue."""

    def __init__(
        self,
        catalog: ModelCatalog,
        tools: ToolFactory,
        tool_settings: ToolSettings,
        analysis: Any,
        *,
        own_queues: frozenset[str] = frozenset(),
    ) -> None:
        self._own_queues = own_queues
        self._catalog = catalog
        self._tools = tools
        self._tool_settings = tool_settings
        self._analysis = analysis

    def __call__(self, principal: Principal, spec: JobCreate) -> None:
        self._catalog.require(spec.model)
        if not principal.may_use(spec.model):
            raise InvalidRequestError(
                f"This API key is not allowed to use the model `{spec.model}`.", param="model"
            )
        unknown = [t for t in spec.tools if t not in BUILTIN_TOOLS]
        if unknown:
            raise InvalidRequestError(f"Unknown tool(s): {', '.join(unknown)}.", param="tools")
        self._tools(spec.tools, self._tool_settings)  # refuses tools that are off, e.g. web_search
        if spec.type == "analysis" and self._analysis is not None:
            self._analysis.check_input(spec.task, spec.input)
        if spec.reply_queue is not None and not reply_queue_allowed(spec.reply_queue, self._own_queues):
            raise InvalidRequestError(
                f"`reply_queue` may not be one of the gateway's own queues ({spec.reply_queue}).",
                param="reply_queue",
            )


class JobApi:
    def __init__(
        self, store: JobStore, queues: QueueStore, queue: str, check: JobChecks, notifier: Notifier
    ) -> None:
        self._store = store
        self._queues = queues
        self._queue = queue
        self._check = check
        self._notifier = notifier

    async def create(self, principal: Principal, spec: JobCreate) -> dict[str, Any]:
        if spec.reply_queue is not None:
            # Queue send rights are what lets a system name a queue for the reply; an API key is
            # not, or any tenant could write into another's queue.
            raise InvalidRequestError(
                "`reply_queue` is for jobs submitted on the jobs queue. Over HTTP, use `webhook_url` "
                "or follow GET /v1/jobs/{job_id}/events.",
                param="reply_queue",
            )
        self._check(principal, spec)
        job = await self._store.new(principal, f"job_{uuid.uuid4().hex[:24]}", spec, source="http")
        try:
            await self._queues.send(self._queue, {"v": 1, "job_id": job.id})
        except Exception:
            await self._store.delete(job)
            raise
        log.info("job %s queued (%s)", job.id, spec.type)
        body = job.public()
        if spec.webhook_url:
            body["webhook_secret"] = self._notifier.webhook_secret(job.id)
        return body

    async def enqueue(
        self, principal: Principal, job_id: str, spec: dict[str, Any], events: list[dict[str, Any]]
    ) -> None:
        """Store and queue a job another surface made and checked (a background response), with
        its first events: event n is `events[n - 1]`."""
        now = time.time()
        job = JobRecord(
            id=job_id,
            pk=job_id,
            type=spec["type"],
            spec=spec,
            created_at=int(now),
            ts=now,
            **principal.stamp(),
        )
        await self._store.create(job)
        try:
            for event in events:
                await self._store.event(job, event["type"], event)
            await self._queues.send(self._queue, {"v": 1, "job_id": job.id})
        except Exception:
            await self._store.delete(job)
            raise
        log.info("job %s queued (%s)", job.id, job.type)

    async def stop(self, job_id: str) -> None:
        """Cancel a job another surface owns (its own checks done): nothing if it has ended."""
        with contextlib.suppress(ConflictError):
            await self._cancel(job_id)

    async def get(self, principal: Principal, job_id: str) -> dict[str, Any]:
        return (await self._load_for(principal, job_id)).public()

    async def list_page(self, principal: Principal, *, limit: int, after: str | None) -> dict[str, Any]:
        cursor = (await self._load_for(principal, after)).ts if after else None
        return await self._store.page(principal, limit=limit, after=cursor)

    async def cancel(self, principal: Principal, job_id: str) -> dict[str, Any]:
        await self._load_for(principal, job_id)
        return (await self._cancel(job_id)).public()

    async def _cancel(self, job_id: str) -> JobRecord:
        def cancel(job: JobRecord) -> bool:
            if job.status in ENDED:
                raise ConflictError(f"Cannot cancel a job with status '{job.status}'.")
            if job.status == "queued":
                job.status, job.ended_at = "cancelled", int(time.time())
            else:
                job.status = "cancelling"
            return True

        job = await self._store.update(job_id, cancel)
        if job.status == "cancelled":
            await self._store.event(job, "job.cancelled", {})
        return job

    async def events(
        self, principal: Principal, job_id: str, after: int
    ) -> AsyncIterator[tuple[int, str, Any]]:
        """The job's events after `after`, then new ones as they come, until the job ends."""
        await self._load_for(principal, job_id)
        return self._follow(job_id, after)

    def follow(self, job_id: str, after: int) -> AsyncIterator[tuple[int, str, Any]]:
        """`events` for a job another surface owns (its own checks done)."""
        return self._follow(job_id, after)

    async def _follow(self, job_id: str, after: int) -> AsyncIterator[tuple[int, str, Any]]:
        deadline = time.monotonic() + EVENT_STREAM_S
        while time.monotonic() < deadline:
            job = await self._store.load(job_id)
            rows = await self._store.events_after(job_id, after)
            for row in rows:
                after = row["seq"]
                yield row["seq"], row["type"], row["data"]
            if job is None or (job.status in ENDED and not rows):
                return
            await asyncio.sleep(EVENT_POLL_S)

    async def _load_for(self, principal: Principal, job_id: str) -> JobRecord:
        return await records.load_owned(
            self._store.load, job_id, principal, not_found=f"No job found with id '{job_id}'.", param="job_id"
        )
