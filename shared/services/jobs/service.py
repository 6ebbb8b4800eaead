"""JobService: the one object the container builds for jobs, with the HTTP API and the queue
worker behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from shared.clients.protocols import DocumentStore, QueueStore
from shared.models.jobs import JobCreate, JobRecord
from shared.services.auth import Principal
from shared.services.files import FileService
from shared.services.jobs.api import JobApi, JobChecks, ToolFactory
from shared.services.jobs.notify import DeliverWebhook, Notifier
from shared.services.jobs.response_step import ResponseRunner
from shared.services.jobs.run import ChatCall
from shared.services.jobs.store import JobStore
from shared.services.jobs.worker import SWEEP_LIMIT, JobWorker
from shared.services.model_catalog import ModelCatalog
from shared.services.owners import Lookup as OwnerLookup
from shared.services.tools import ToolSettings, build_tools


class JobService:
    def __init__(
        self,
        documents: DocumentStore,
        queues: QueueStore,
        files: FileService,
        catalog: ModelCatalog,
        *,
        queue: str,
        own_queues: frozenset[str] = frozenset(),
        chat: ChatCall,
        owner: OwnerLookup,
        tool_settings: ToolSettings,
        webhook_secret: bytes,
        deliver_webhook: DeliverWebhook | None = None,
        analysis: Any = None,
        lease_seconds: float = 90.0,
        tools: ToolFactory = build_tools,
        responses: ResponseRunner | None = None,
    ) -> None:
        """`owner(key_id)`: the principal a job runs as. `tools`: the agent's tools by name (the
        built-in ones; a seam for tests). `responses`: what background responses run with.
        `own_queues`: the app's own queues, which no job may name as its `reply_queue`."""
        store = JobStore(documents)
        self._store = store
        own_queues = own_queues | {queue, f"{queue}-poison"}
        check = JobChecks(catalog, tools, tool_settings, analysis, own_queues=own_queues)
        self._notifier = Notifier(store, queues, webhook_secret, deliver_webhook, own_queues=own_queues)
        self._api = JobApi(store, queues, queue, check, self._notifier)
        self._worker = JobWorker(
            store,
            queues,
            files,
            queue=queue,
            check=check,
            notifier=self._notifier,
            chat=chat,
            owner=owner,
            tools=tools,
            tool_settings=tool_settings,
            analysis=analysis,
            lease_seconds=lease_seconds,
            responses=responses,
        )

    # --- the HTTP API ---------------------------------------------------------------------

    async def create(self, principal: Principal, spec: JobCreate) -> dict[str, Any]:
        """Check, store and queue a job: its public form (with `webhook_secret` if it has a webhook)."""
        return await self._api.create(principal, spec)

    async def get(self, principal: Principal, job_id: str) -> dict[str, Any]:
        return await self._api.get(principal, job_id)

    async def list_page(self, principal: Principal, *, limit: int, after: str | None) -> dict[str, Any]:
        return await self._api.list_page(principal, limit=limit, after=after)

    async def cancel(self, principal: Principal, job_id: str) -> dict[str, Any]:
        return await self._api.cancel(principal, job_id)

    async def events(
        self, principal: Principal, job_id: str, after: int
    ) -> AsyncIterator[tuple[int, str, Any]]:
        """The job's events after `after`, then new ones as they come, until the job ends."""
        return await self._api.events(principal, job_id, after)

    # --- runs of other surfaces (background responses), checked by them ---------------------------

    async def enqueue(
        self, principal: Principal, job_id: str, spec: dict[str, Any], events: list[dict[str, Any]]
    ) -> None:
        """Store and queue a job with its first events (event n is `events[n - 1]`)."""
        await self._api.enqueue(principal, job_id, spec, events)

    async def stop(self, job_id: str) -> None:
        """Cancel the job (as POST /v1/jobs/{id}/cancel would); nothing if it has ended."""
        await self._api.stop(job_id)

    async def run_status(self, job_id: str) -> JobRecord | None:
        return await self._store.load(job_id)

    def follow(self, job_id: str, after: int) -> AsyncIterator[tuple[int, str, Any]]:
        """The job's events after `after`, then new ones as they come, until it ends."""
        return self._api.follow(job_id, after)

    def webhook_secret(self, job_id: str) -> str:
        """The key a job's webhook calls are signed with."""
        return self._notifier.webhook_secret(job_id)

    # --- the queue ------------------------------------------------------------------------

    async def handle(self, raw: Any) -> None:
        """One jobs-queue message. A malformed one raises, so it ends in the poison queue."""
        await self._worker.handle(raw)

    async def handle_poison(self, raw: Any) -> None:
        """A message that failed every delivery: leave a record saying why, never silence."""
        await self._worker.handle_poison(raw)

    async def sweep(self, now: float, *, limit: int = SWEEP_LIMIT) -> int:
        """For a timer: send the message again for jobs left with no run and no message (a lapsed
        lease, or queued too long); bounded by `limit`, idempotent. How many were sent."""
        return await self._worker.sweep(now, limit=limit)
