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
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from pydantic import ValidationError

from shared.clients.protocols import QueueStore
from shared.errors import CirrusError, ConflictError, InvalidRequestError
from shared.models.jobs import ENDED, JobCreate, JobMessage, JobRecord, ResponseJobSpec
from shared.models.validation import validate_body
from shared.services.auth import Principal
from shared.services.files import FileService
from shared.services.jobs.agent import Agent, partial_result
from shared.services.jobs.analysis_step import run_analysis
from shared.services.jobs.api import JobChecks, ToolFactory
from shared.services.jobs.notify import Notifier
from shared.services.jobs.response_step import ResponseRunner, run_response
from shared.services.jobs.run import ChatCall, Run, Stop, progress, read_owner
from shared.services.jobs.store import JobStore
from shared.services.owners import Lookup as OwnerLookup
from shared.services.tools import ToolSettings

log = logging.getLogger("cirrus.jobs")

T = TypeVar("T")

# The sweeper: a safety net for a job whose message was lost, so it waits out the usual ways back
# (the host's redelivery, a copy's "look again later" message) before it sends one itself.
SWEEP_GRACE_S = 120.0  # past the end of a running job's lease
SWEEP_QUEUED_S = 300.0  # since a queued job was created
SWEEP_AGAIN_S = 300.0  # before the same job is sent again
SWEEP_LIMIT = 100


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
        responses: ResponseRunner | None = None,
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
        self._responses = responses
        self._lease = lease_seconds  # a worker that stops renewing for this long is presumed dead

    async def handle(self, raw: Any) -> None:
        """One jobs-queue message. A malformed one raises, so it ends in the poison queue; one whose
        envelope is sound but whose `job` is not fails that job at once, with a record saying why."""
        try:
            message = JobMessage.model_validate(raw)
        except ValidationError:
            envelope = _sound_envelope(raw)
            if envelope is None:
                raise
            await self._reject(envelope, raw)
            return
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

    async def sweep(
        self,
        now: float,
        *,
        grace_s: float = SWEEP_GRACE_S,
        queued_s: float = SWEEP_QUEUED_S,
        again_s: float = SWEEP_AGAIN_S,
        limit: int = SWEEP_LIMIT,
    ) -> int:
        """Send the queue message again for jobs whose run was lost with no message left to resume
        them: running (or cancelling) with a lease lapsed more than `grace_s` ago, or queued for
        more than `queued_s`. At most `limit` jobs a call, each at most once per `again_s` (marked
        under its ETag, so two sweeps send one message); a duplicate message is harmless (a claim
        runs a job once). One query when there is nothing to do. Returns how many were sent."""
        due = await self._store.stalled(
            lapsed_before=now - grace_s, queued_before=now - queued_s, swept_before=now - again_s, limit=limit
        )
        sent = 0
        for job_id in due:
            marked = False

            def mark(job: JobRecord) -> bool:
                nonlocal marked
                lapsed = job.status in ("running", "cancelling") and job.lease_until < now - grace_s
                stale = job.status == "queued" and job.ts < now - queued_s
                if not (lapsed or stale) or (job.swept_at or 0.0) >= now - again_s:
                    return False  # resumed, ended or swept meanwhile
                job.swept_at, marked = now, True
                return True

            await self._store.update(job_id, mark)
            if marked:
                await self._queues.send(self._queue, {"v": 1, "job_id": job_id})
                log.warning("job %s: no run held it; its message was sent again", job_id)
                sent += 1
        return sent

    async def _check_later(self, job_id: str) -> None:
        """Another run holds the job. It may be alive (then this copy must not run it too) or dead
        with its lease not yet lapsed: look again once the lease has had time to lapse, so a job
        is never left to a worker that is gone."""
        current = await self._store.load(job_id)
        if current is None or current.status in ENDED:
            return
        delay = max(1, int(current.lease_until - time.time()) + 1)
        await self._queues.send(self._queue, {"v": 1, "job_id": job_id}, delay_seconds=delay)

    async def _reject(self, envelope: JobMessage, raw: dict[str, Any]) -> None:
        """A queue-submitted job that can never run: a failed record under its id, at once (a retry
        would only fail the same way), and its reply queue told."""
        try:
            validate_body(JobMessage, raw)
            problem = InvalidRequestError("The job is invalid.", param="job")
        except InvalidRequestError as exc:  # the envelope is sound: this names the bad `job.` field
            problem = exc
        error = {**_error(problem), "param": problem.param}
        job = raw.get("job")
        spec: dict[str, Any] = {"job": _clip(job)}
        if envelope.reply_queue:
            spec["reply_queue"] = envelope.reply_queue
        kind = job.get("type") if isinstance(job, dict) and job.get("type") in ("agent", "analysis") else None
        record = _failed_record(envelope.job_id, str(envelope.key_id), spec, error, kind=kind or "agent")
        try:
            await self._store.create(record)
        except ConflictError:
            return  # a copy of this message recorded it already, or the id is another job's
        await self._store.event(record, "job.failed", {"status": "failed", "reason": None, "error": error})
        log.warning("job %s: refused (%s)", record.id, problem.message)
        await self._notifier.ended(record)

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
            sent_key = raw.get("key_id") if isinstance(raw, dict) else None
            key_id = sent_key if isinstance(sent_key, str) else "unknown"
            record = _failed_record(job_id, key_id, {"message": _clip(raw)}, error)
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
        token = str(job.worker)

        async def renew() -> float | None:
            until: float | None = None

            def extend(current: JobRecord) -> bool:
                nonlocal until
                if current.worker != token:
                    return False
                current.lease_until = until = time.time() + self._lease
                return True

            await self._store.update(job.id, extend)
            return until

        lease = Lease(job.id, renew, seconds=self._lease, until=job.lease_until)
        ended = await lease.hold(self._steps(job))
        if ended is not None:
            await self._notifier.ended(ended)  # after the lease: a slow webhook holds nothing

    async def _steps(self, job: JobRecord) -> JobRecord | None:
        """Run the job to its end: the ended item (None if another run took the job over)."""
        try:
            # Stored before today's checks, it may not pass them.
            spec: JobCreate | ResponseJobSpec = (
                validate_body(ResponseJobSpec, job.spec)
                if job.type == "response"
                else validate_body(JobCreate, job.spec)
            )
        except InvalidRequestError as exc:
            return await self._finish(job, "failed", error=_error(exc))
        run = Run(job, spec, self._store, self._chat, self._owner, lease_seconds=self._lease)
        try:
            # Events written after the last checkpoint of a worker that died are kept: go on after them.
            job.event_seq = max(job.event_seq, await self._store.last_event(job.id))
            await run.principal()  # a key revoked while the job waited fails it before anything runs
            if job.attempts == 1 and not job.steps and job.type != "response":  # a response's are its own
                await run.event("job.started", {"type": job.type, "model": spec.model})
            if job.type == "response":
                result = await run_response(run, self._responses)
            elif job.type == "agent":
                assert isinstance(spec, JobCreate)
                tools = self._tools(spec.tools, self._tool_settings)
                result = await Agent(run, spec, tools, self._files, self._tool_settings).run()
            else:
                result = await run_analysis(run, self._analysis)
            return await self._finish(job, "completed", result=result)
        except Stop as stop:
            return await self._finish(job, stop.status, reason=stop.reason, error=stop.error)
        except CirrusError as exc:
            return await self._finish(job, "failed", error=_error(exc))
        except BaseException:
            await self._release(job)  # the host retries the message; the retry must not find it held
            raise

    async def _end(
        self,
        job: JobRecord,
        status: str,
        *,
        result: Any = None,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        ended = await self._finish(job, status, result=result, reason=reason, error=error)
        if ended is not None:
            await self._notifier.ended(ended)

    async def _finish(
        self,
        job: JobRecord,
        status: str,
        *,
        result: Any = None,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> JobRecord | None:
        """Save how the job ended and record its last event: the ended item (None: `lost`)."""
        if status == "lost":
            log.warning("job %s: another worker took over", job.id)
            return None
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
        return ended

    async def _release(self, job: JobRecord) -> None:
        def release(current: JobRecord) -> bool:
            if current.worker != job.worker:
                return False
            current.worker, current.lease_until = None, 0.0
            return True

        with contextlib.suppress(Exception):
            await asyncio.shield(self._store.update(job.id, release))


class LeaseNotRenewed(Exception):
    """The run could not renew its lease before the lease could lapse, so it abandoned (cancelled)
    the step it was running before another worker could claim the job. Not a CirrusError: the
    message fails, the queue redelivers it, and the redelivery resumes from the checkpoint."""


class Lease:
    """A run's hold on its job, renewed while the run goes on, and supervised: it never dies
    unobserved.

    Every `seconds / 4` the lease is renewed. A renewal that fails (any exception: the store's SDK
    raises its own, not CirrusErrors) or hangs is tried again with a growing backoff while the
    lease still has time. If it cannot be renewed by `seconds / 6` before it lapses, the work is
    cancelled there, while no other worker can yet claim the job, and `hold` raises
    LeaseNotRenewed. A renewal that finds the job no longer this run's stops renewing; the run's
    next checkpoint sees the same and stops.
    """

    def __init__(
        self,
        job_id: str,
        renew: Callable[[], Awaitable[float | None]],
        *,
        seconds: float,
        until: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        """`renew()`: the lease's new end (a `clock` time), or None if the job is no longer this
        run's. `until`: when the lease held now ends."""
        self._job_id = job_id
        self._renew = renew
        self._until = until
        self._every = seconds / 4
        self._margin = seconds / 6  # before the lapse: room to cancel, and for clocks that differ
        self._first_retry = min(1.0, seconds / 20)
        self._max_retry = seconds / 8
        self._clock = clock
        self._sleep = sleep
        self._failure: BaseException | None = None
        self._abandoned = False

    async def hold(self, work: Coroutine[Any, Any, T]) -> T:
        """`work`'s result, the lease renewed while it runs; LeaseNotRenewed if it was abandoned."""
        task = asyncio.ensure_future(work)
        keeper = asyncio.ensure_future(self._keep(task))
        try:
            return await task
        except asyncio.CancelledError:
            this = asyncio.current_task()
            if self._abandoned and task.cancelled() and not (this and this.cancelling()):
                raise LeaseNotRenewed(
                    f"job {self._job_id}: the lease could not be renewed in time; the step was abandoned"
                ) from self._failure
            raise
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep(self, work: asyncio.Future[Any]) -> None:
        try:
            while True:
                await self._sleep(self._every)
                renewed = await self._renew_in_time()
                if renewed is None:
                    return  # not this run's any more: nothing to renew
                if not renewed:
                    log.error(
                        "job %s: the lease could not be renewed in time (%s); abandoning the step",
                        self._job_id,
                        type(self._failure).__name__,
                    )
                    self._abandon(work)
                    return
        except Exception as exc:  # a fault of the keeper itself must not leave the work unguarded
            self._failure = exc
            log.exception("job %s: the lease keeper failed; abandoning the step", self._job_id)
            self._abandon(work)

    async def _renew_in_time(self) -> bool | None:
        """Renew, trying again with a growing backoff while the lease has time: True when renewed,
        False when it could not be before the margin, None when the job is no longer this run's."""
        delay = self._first_retry
        while (left := self._until - self._margin - self._clock()) > 0:
            try:
                async with asyncio.timeout(left):  # a renewal that hangs is a failed one
                    until = await self._renew()
            except Exception as exc:  # the store's SDK raises its own errors, not only CirrusErrors
                self._failure = exc
                log.warning("job %s: lease renewal failed (%s)", self._job_id, type(exc).__name__)
                await self._sleep(min(delay, max(0.0, self._until - self._margin - self._clock())))
                delay = min(delay * 2, self._max_retry)
                continue
            if until is None:
                return None
            self._until = until
            return True
        return False

    def _abandon(self, work: asyncio.Future[Any]) -> None:
        self._abandoned = True
        work.cancel()


def _error(exc: CirrusError) -> dict[str, Any]:
    """A failed job's `error`."""
    error: dict[str, Any] = {"code": exc.code or exc.type, "message": exc.message}
    if isinstance(getattr(exc, "raw_output", None), str):  # an answer that never fit the schema
        error["raw_output"] = exc.raw_output  # type: ignore[attr-defined]
    return error


def _sound_envelope(raw: Any) -> JobMessage | None:
    """The message without its `job`, if that part is sound and names the key the job runs as
    (then only the job can be what failed validation); None otherwise."""
    if not isinstance(raw, dict) or raw.get("job") is None:
        return None
    try:
        envelope = JobMessage.model_validate({**raw, "job": None})
    except ValidationError:
        return None
    return envelope if envelope.key_id else None


def _failed_record(
    job_id: str, owner: str, spec: dict[str, Any], error: dict[str, Any], *, kind: str = "agent"
) -> JobRecord:
    """A queue job that failed before it could start: its record, owned by the key it named."""
    now = time.time()
    return JobRecord(
        id=job_id,
        pk=job_id,
        type=kind,  # type: ignore[arg-type]
        status="failed",
        spec=spec,
        owner=owner,
        source="queue",
        created_at=int(now),
        ts=now,
        ended_at=int(now),
        error=error,
    )


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
