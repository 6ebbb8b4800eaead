"""A jobs-queue message, start to end: accept a queue-submitted job, claim the job with a lease,
keep the lease alive while the run goes on, run it, end it, and record a poisoned message.

A worker claims the job with an ETag-guarded lease. The holder is the run, not the process: two
copies of a message in one worker do not both run it. A redelivered message, or another worker
after the lease lapses, resumes from the job's item. A second copy of a message while another run
holds the lease runs nothing: it only comes back after the lease could have lapsed, to take over a
run whose worker died.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from typing import Any

from pydantic import ValidationError

from shared.clients.protocols import QueueStore
from shared.errors import CirrusError, ConflictError
from shared.models.jobs import ENDED, JobCreate, JobMessage, JobRecord
from shared.services.auth import Principal
from shared.services.files import FileService
from shared.services.jobs.agent import Agent, partial_result
from shared.services.jobs.analysis_step import run_analysis
from shared.services.jobs.api import JobChecks, ToolFactory
from shared.services.jobs.notify import Notifier
from shared.services.jobs.run import ChatCall, Run, Stop, progress, read_owner
from shared.services.jobs.store import JobStore
from shared.services.owners import Lookup as OwnerLookup
from shared.services.tools import ToolSettings

log = logging.getLogger("cirrus.jobs")


class JobWorker:
    def __init__(
        self,
        store: JobStore,
        queues: QueueStore,
        files: FileService,
        *,
        queue: str,
        check: JobChecks,
        notifier: Notifier,
        chat: ChatCall,
        owner: OwnerLookup,
        tools: ToolFactory,
        tool_settings: ToolSettings,
        analysis: Any,
        lease_seconds: float,
    ) -> None:
        self._store = store
        self._queues = queues
        self._files = files
        self._queue = queue
        self._check = check
        self._notifier = notifier
        self._chat = chat
        self._owner = owner
        self._tools = tools
        self._tool_settings = tool_settings
        self._analysis = analysis
        self._lease = lease_seconds  # a worker that stops renewing for this long is presumed dead

    async def handle(self, raw: Any) -> None:
        """One jobs-queue message. A malformed one raises, so it ends in the poison queue."""
        message = JobMessage.model_validate(raw)
        job = await self._store.load(message.job_id)
        if job is None:
            if message.job is None:
                log.warning("job %s: no such job; message dropped", message.job_id)
                return
            job = await self._accept(message)
        if job.status in ENDED:
            return  # a second copy of a finished job runs nothing
        claimed = await self._claim(job.id)
        if claimed is None:
            await self._check_later(job.id)
            return
        await self._run(claimed)

    async def _check_later(self, job_id: str) -> None:
        """Another run holds the job. It may be alive (then this copy must not run it too) or dead
        with its lease not yet lapsed: look again once the lease has had time to lapse, so a job
        is never left to a worker that is gone."""
        current = await self._store.load(job_id)
        if current is None or current.status in ENDED:
            return
        delay = max(1, int(current.lease_until - time.time()) + 1)
        await self._queues.send(self._queue, {"v": 1, "job_id": job_id}, delay_seconds=delay)

    async def handle_poison(self, raw: Any) -> None:
        """A message that failed every delivery: leave a record saying why, never silence."""
        reason = _why_malformed(raw)
        job_id = raw.get("job_id") if isinstance(raw, dict) else None
        if not isinstance(job_id, str) or not job_id.startswith("job_") or len(job_id) > 70:
            job_id = (
                "job_poison_"
                + hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:24]
            )
        error = {
            "code": "message_failed",
            "message": f"The jobs queue message could not be processed: {reason}",
        }
        job = await self._store.load(job_id)
        if job is None:
            key_id = (
                raw.get("key_id")
                if isinstance(raw, dict) and isinstance(raw.get("key_id"), str)
                else "unknown"
            )
            now = time.time()
            record = JobRecord(
                id=job_id,
                pk=job_id,
                type="agent",
                status="failed",
                spec={"message": _clip(raw)},
                owner=key_id,
                source="queue",
                created_at=int(now),
                ts=now,
                ended_at=int(now),
                error=error,
            )
            with contextlib.suppress(ConflictError):
                await self._store.create(record)
            log.error("jobs queue: poisoned message recorded as %s (%s)", job_id, reason)
            return
        if job.status not in ENDED:
            await self._end(job, "failed", error=error)
        log.error("job %s: message poisoned (%s)", job_id, reason)

    async def _accept(self, message: JobMessage) -> JobRecord:
        """A job submitted straight onto the queue: stored under its own id, run as its key."""
        assert message.job is not None and message.key_id is not None
        spec = message.job
        if message.reply_queue and not spec.reply_queue:
            spec = spec.model_copy(update={"reply_queue": message.reply_queue})
        try:
            # A key that cannot be read right now raises KeyUnreadable: the message is retried.
            principal = await read_owner(self._owner, message.key_id)
            self._check(principal, spec)
        except CirrusError as exc:  # an unknown or revoked key, a model it may not use, ...
            principal = Principal(key_id=message.key_id, is_master=False)
            job = await self._create_or_load(principal, message.job_id, spec)
            if job.status not in ENDED:
                await self._end(job, "failed", error={"code": exc.code or exc.type, "message": exc.message})
            return (await self._store.load(job.id)) or job
        return await self._create_or_load(principal, message.job_id, spec)

    async def _create_or_load(self, principal: Principal, job_id: str, spec: JobCreate) -> JobRecord:
        try:
            return await self._store.new(principal, job_id, spec, source="queue")
        except ConflictError:  # two copies raced to create it
            job = await self._store.load(job_id)
            assert job is not None
            return job

    async def _claim(self, job_id: str) -> JobRecord | None:
        """Hold the job for one run. The holder is the run, not the process: two copies of a message
        in one worker do not both run it."""
        claimed = False
        token = uuid.uuid4().hex[:16]

        def claim(job: JobRecord) -> bool:
            nonlocal claimed
            now = time.time()
            if job.status in ENDED or (job.worker is not None and job.lease_until > now):
                return False
            if job.status == "queued":
                job.status, job.started_at = "running", int(now)
            job.worker, job.lease_until, job.attempts = token, now + self._lease, job.attempts + 1
            claimed = True
            return True

        job = await self._store.update(job_id, claim)
        return job if claimed else None

    # --- running --------------------------------------------------------------------------

    async def _run(self, job: JobRecord) -> None:
        spec = JobCreate.model_validate(job.spec)
        run = Run(job, spec, self._store, self._chat, self._owner, lease_seconds=self._lease)
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(job.id, str(job.worker)))
        try:
            # Events written after the last checkpoint of a worker that died are kept: go on after them.
            job.event_seq = max(job.event_seq, await self._store.last_event(job.id))
            await run.principal()  # a key revoked while the job waited fails it before anything runs
            if job.attempts == 1 and not job.steps:
                await run.event("job.started", {"type": job.type, "model": spec.model})
            if job.type == "agent":
                tools = self._tools(spec.tools, self._tool_settings)
                result = await Agent(run, tools, self._files, self._tool_settings).run()
            else:
                result = await run_analysis(run, self._analysis)
            await self._end(job, "completed", result=result)
        except Stop as stop:
            await self._end(job, stop.status, reason=stop.reason, error=stop.error)
        except CirrusError as exc:
            error: dict[str, Any] = {"code": exc.code or exc.type, "message": exc.message}
            if isinstance(getattr(exc, "raw_output", None), str):  # an answer that never fit the schema
                error["raw_output"] = exc.raw_output  # type: ignore[attr-defined]
            await self._end(job, "failed", error=error)
        except BaseException:
            await self._release(job)  # the host retries the message; the retry must not find it held
            raise
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _end(
        self,
        job: JobRecord,
        status: str,
        *,
        result: Any = None,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        if status == "lost":
            log.warning("job %s: another worker took over", job.id)
            return
        values = progress(job)

        def end(current: JobRecord) -> bool:
            if current.status in ENDED:
                return False
            for name, value in values.items():
                setattr(current, name, value)
            current.status = status  # type: ignore[assignment]
            current.ended_at = int(time.time())
            current.result = result if result is not None else partial_result(current.messages, current.step)
            current.error = error
            current.incomplete_details = {"reason": reason} if reason else None
            current.worker, current.lease_until = None, 0.0
            return True

        ended = await self._store.update(job.id, end)
        job.event_seq = ended.event_seq
        await self._store.event(ended, f"job.{status}", {"status": status, "reason": reason, "error": error})
        log.info("job %s %s%s", job.id, status, f" ({reason})" if reason else "")
        await self._notifier.ended(ended)

    async def _release(self, job: JobRecord) -> None:
        def release(current: JobRecord) -> bool:
            if current.worker != job.worker:
                return False
            current.worker, current.lease_until = None, 0.0
            return True

        with contextlib.suppress(Exception):
            await asyncio.shield(self._store.update(job.id, release))

    async def _heartbeat(self, job_id: str, token: str) -> None:
        while True:
            await asyncio.sleep(self._lease / 4)

            def renew(job: JobRecord) -> bool:
                if job.worker != token:
                    return False
                job.lease_until = time.time() + self._lease
                return True

            with contextlib.suppress(CirrusError):
                await self._store.update(job_id, renew)


def _why_malformed(raw: Any) -> str:
    if raw is None:
        return "it is not JSON"
    try:
        JobMessage.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        return f"{where}: {first['msg']}"
    return "it failed on every delivery (see the server log)"


def _clip(raw: Any) -> Any:
    text = json.dumps(raw, default=str)
    return raw if len(text) <= 4000 else text[:4000]
