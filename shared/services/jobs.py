"""Jobs: agent runs and analysis tasks that run on the jobs queue, checkpointed step by step.

A job is one Cosmos item (`jobs`, partitioned by its id) that is also its checkpoint: the agent's
conversation so far, or an analysis's model answers. A worker claims the job with an ETag-guarded
lease, and saves the item after every model call and every tool result, before the next step.
A redelivered message, or another worker after the lease lapses, resumes from the item: a tool
call with a saved result is never run again; a model call is repeated only if the worker died
between getting its answer and saving it. A second copy of a message while another run holds
the lease runs nothing: it only comes back after the lease could have lapsed, to take over a run
whose worker died.

Events (step started/finished, tool call/result/blocked, usage, the end) are items of their own
in the job's partition, numbered, so `GET /v1/jobs/{id}/events` can replay them and resume after
`Last-Event-ID`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from shared.clients.protocols import DocumentStore, QueueStore
from shared.errors import (
    CirrusError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamRateLimitError,
)
from shared.models.jobs import ENDED, JobCreate, JobMessage, JobRecord
from shared.models.requests import ChatCompletionCreate
from shared.models.validation import validate_body
from shared.services import records
from shared.services.auth import Principal
from shared.services.calls import CallContext
from shared.services.files import FileService
from shared.services.model_catalog import ModelCatalog
from shared.services.tools import (
    BUILTIN_TOOLS,
    ToolBlocked,
    ToolContext,
    ToolError,
    ToolSettings,
    build_tools,
)

log = logging.getLogger("cirrus.jobs")

CONTAINER = "jobs"
EVENT_POLL_S = 0.5
EVENT_STREAM_S = 200.0  # under Azure's 230 s HTTP limit; clients resume with Last-Event-ID
MAX_TOOL_OUTPUT_CHARS = 20_000
MAX_RATE_WAIT_S = 60.0
TRANSIENT_ATTEMPTS = 3

# Runs one chat request as live traffic would: the completion and its cost in USD (None: unknown).
Completion = dict[str, Any]  # OpenAI's chat.completion JSON
ChatCall = Callable[[ChatCompletionCreate, CallContext], Awaitable[tuple[Completion, float | None]]]
OwnerLookup = Callable[[str], Awaitable[Principal]]


class _Stop(Exception):
    """A signal, not an error: the run ends here with this status."""

    def __init__(self, status: str, reason: str | None = None, error: dict[str, Any] | None = None) -> None:
        super().__init__(status)
        self.status, self.reason, self.error = status, reason, error


class JobService:
    def __init__(
        self,
        documents: DocumentStore,
        queues: QueueStore,
        files: FileService,
        catalog: ModelCatalog,
        *,
        queue: str,
        chat: ChatCall,
        owner: OwnerLookup,
        tool_settings: ToolSettings,
        webhook_secret: bytes,
        deliver_webhook: Callable[[str, bytes, dict[str, str]], Awaitable[None]] | None = None,
        analysis: Any = None,
        lease_seconds: float = 90.0,
    ) -> None:
        self._documents = documents
        self._queues = queues
        self._files = files
        self._catalog = catalog
        self._queue = queue
        self._chat = chat
        self._owner = owner
        self._tools = tool_settings
        self._webhook_secret = webhook_secret
        self._deliver_webhook = deliver_webhook
        self._analysis = analysis
        self._lease = lease_seconds  # a worker that stops renewing for this long is presumed dead

    # --- the HTTP API ---------------------------------------------------------------------

    async def create(self, principal: Principal, spec: JobCreate) -> dict[str, Any]:
        self._check(principal, spec)
        job = await self._new(principal, f"job_{uuid.uuid4().hex[:24]}", spec, source="http")
        try:
            await self._queues.send(self._queue, {"v": 1, "job_id": job.id})
        except Exception:
            await self._documents.delete(CONTAINER, job.id, job.pk)
            raise
        log.info("job %s queued (%s)", job.id, spec.type)
        body = job.public()
        if spec.webhook_url:
            body["webhook_secret"] = self.webhook_secret(job.id)
        return body

    async def get(self, principal: Principal, job_id: str) -> dict[str, Any]:
        return (await self._load_for(principal, job_id)).public()

    async def list(self, principal: Principal, *, limit: int, after: str | None) -> dict[str, Any]:
        after_ts = (await self._load_for(principal, after)).ts if after else None
        return await records.owned_page(
            self._documents,
            CONTAINER,
            "job",
            principal,
            limit=limit,
            after_ts=after_ts,
            public=lambda row: JobRecord.model_validate(row).public(),
        )

    async def cancel(self, principal: Principal, job_id: str) -> dict[str, Any]:
        await self._load_for(principal, job_id)

        def cancel(job: JobRecord) -> bool:
            if job.status in ENDED:
                raise ConflictError(f"Cannot cancel a job with status '{job.status}'.")
            if job.status == "queued":
                job.status, job.ended_at = "cancelled", int(time.time())
            else:
                job.status = "cancelling"
            return True

        job = await self._update(job_id, cancel)
        if job.status == "cancelled":
            await self._event(job, "job.cancelled", {})
        return job.public()

    async def events(
        self, principal: Principal, job_id: str, after: int
    ) -> AsyncIterator[tuple[int, str, Any]]:
        """The job's events after `after`, then new ones as they come, until the job ends."""
        await self._load_for(principal, job_id)
        return self._follow(job_id, after)

    async def _follow(self, job_id: str, after: int) -> AsyncIterator[tuple[int, str, Any]]:
        deadline = time.monotonic() + EVENT_STREAM_S
        while time.monotonic() < deadline:
            job = await self._load(job_id)
            rows = await self._documents.query(
                CONTAINER,
                "SELECT * FROM c WHERE c.pk = @pk AND c.object = 'job.event' AND c.seq > @after"
                " ORDER BY c.seq",
                {"@pk": job_id, "@after": after},
                pk=job_id,
            )
            for row in rows:
                after = row["seq"]
                yield row["seq"], row["type"], row["data"]
            if job is None or (job.status in ENDED and not rows):
                return
            await asyncio.sleep(EVENT_POLL_S)

    def webhook_secret(self, job_id: str) -> str:
        """The key a job's webhook calls are signed with: derived, so it need not be stored."""
        return "whsec_" + hmac.new(self._webhook_secret, job_id.encode(), hashlib.sha256).hexdigest()[:40]

    def _check(self, principal: Principal, spec: JobCreate) -> None:
        self._catalog.require(spec.model)
        if not principal.may_use(spec.model):
            raise InvalidRequestError(
                f"This API key is not allowed to use the model `{spec.model}`.", param="model"
            )
        unknown = [t for t in spec.tools if t not in BUILTIN_TOOLS]
        if unknown:
            raise InvalidRequestError(f"Unknown tool(s): {', '.join(unknown)}.", param="tools")
        build_tools(spec.tools, self._tools)  # refuses tools that are off, e.g. web_search without a provider
        if spec.type == "analysis" and self._analysis is not None:
            self._analysis.check_input(spec.task, spec.input)

    async def _new(self, principal: Principal, job_id: str, spec: JobCreate, *, source: str) -> JobRecord:
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
        await self._documents.create(CONTAINER, job.model_dump(mode="json"))
        return job

    async def _load_for(self, principal: Principal, job_id: str) -> JobRecord:
        job = await self._load(job_id)
        if job is None or not principal.can_see(job.owner, job.team):
            raise NotFoundError(f"No job found with id '{job_id}'.", param="job_id")
        return job

    # --- the queue ------------------------------------------------------------------------

    async def handle(self, raw: Any) -> None:
        """One jobs-queue message. A malformed one raises, so it ends in the poison queue."""
        message = JobMessage.model_validate(raw)
        job = await self._load(message.job_id)
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
        current = await self._load(job_id)
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
        job = await self._load(job_id)
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
                await self._documents.create(CONTAINER, record.model_dump(mode="json"))
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
            principal = await self._owner(message.key_id)
            self._check(principal, spec)
        except CirrusError as exc:  # an unknown or revoked key, a model it may not use, ...
            principal = Principal(key_id=message.key_id, is_master=False)
            job = await self._create_or_load(principal, message.job_id, spec)
            if job.status not in ENDED:
                await self._end(job, "failed", error={"code": exc.code or exc.type, "message": exc.message})
            return (await self._load(job.id)) or job
        return await self._create_or_load(principal, message.job_id, spec)

    async def _create_or_load(self, principal: Principal, job_id: str, spec: JobCreate) -> JobRecord:
        try:
            return await self._new(principal, job_id, spec, source="queue")
        except ConflictError:  # two copies raced to create it
            job = await self._load(job_id)
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

        job = await self._update(job_id, claim)
        return job if claimed else None

    # --- running --------------------------------------------------------------------------

    async def _run(self, job: JobRecord) -> None:
        spec = JobCreate.model_validate(job.spec)
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(job.id, str(job.worker)))
        try:
            # Events written after the last checkpoint of a worker that died are kept: go on after them.
            latest = await self._documents.query(
                CONTAINER,
                "SELECT c.seq FROM c WHERE c.pk = @pk AND c.object = 'job.event' ORDER BY c.seq DESC",
                {"@pk": job.id},
                pk=job.id,
                max_items=1,
            )
            job.event_seq = max([job.event_seq, *(int(row["seq"]) for row in latest if "seq" in row)])
            principal = await self._owner(job.owner)
            if job.attempts == 1 and not job.steps:
                await self._event(job, "job.started", {"type": job.type, "model": spec.model})
            if job.type == "agent":
                result = await self._run_agent(job, spec, principal)
            else:
                result = await self._run_analysis(job, spec, principal)
            await self._end(job, "completed", result=result)
        except _Stop as stop:
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

    async def _run_agent(self, job: JobRecord, spec: JobCreate, principal: Principal) -> Any:
        tools = build_tools(spec.tools, self._tools)
        context = ToolContext(principal=principal, files=self._files, settings=self._tools)
        if not job.messages:
            job.messages = _first_messages(spec)
        while True:
            await self._check_stop(job, spec)
            last = job.messages[-1]
            pending = _unanswered(job.messages)
            if pending:  # finish the tool calls of the last model turn, skipping any already saved
                for call in pending:
                    await self._run_tool(job, tools, context, call)
                continue
            if last.get("role") == "assistant" and not last.get("tool_calls"):
                return {"output_text": last.get("content") or "", "steps": job.step}
            if job.step >= spec.max_steps:
                raise _Stop("incomplete", "max_steps")
            await self._model_step(job, spec, principal, [t.spec() for t in tools.values()])

    async def _model_step(
        self, job: JobRecord, spec: JobCreate, principal: Principal, tool_specs: list[dict[str, Any]]
    ) -> None:
        number = job.step + 1
        await self._event(job, "step.started", {"step": number, "kind": "model"})
        request = ChatCompletionCreate.model_validate(
            {"model": spec.model, "messages": job.messages, **({"tools": tool_specs} if tool_specs else {})}
        )
        call = CallContext(request_id=f"req_{uuid.uuid4().hex}", principal=principal, tags={"job_id": job.id})
        completion, cost = await self._ask(job, spec, request, call)
        message = {k: v for k, v in completion["choices"][0]["message"].items() if v is not None}
        message.pop("refusal", None)
        job.messages.append(message)
        job.step = number
        self._add_usage(job, completion, cost)
        job.steps.append(
            {
                "step": number,
                "kind": "model",
                "tool_calls": [c["function"]["name"] for c in message.get("tool_calls", [])],
            }
        )
        await self._checkpoint(job)
        await self._event(job, "usage", {"step": number, **job.usage})
        await self._event(
            job,
            "step.finished",
            {"step": number, "kind": "model", "tool_calls": len(message.get("tool_calls", []))},
        )

    async def _run_tool(
        self, job: JobRecord, tools: dict[str, Any], context: ToolContext, call: dict[str, Any]
    ) -> None:
        name = call["function"]["name"]
        await self._event(
            job, "tool.call", {"id": call["id"], "name": name, "arguments": call["function"]["arguments"]}
        )
        status = "ok"
        try:
            arguments = json.loads(call["function"]["arguments"] or "{}")
            if name not in tools:
                raise ToolError(f"There is no tool named {name!r}.")
            if not isinstance(arguments, dict):
                raise ToolError("Tool arguments must be a JSON object.")
            output = await tools[name].run(arguments, context)
        except ToolBlocked as exc:
            status, output = "blocked", f"error: {exc}"
            await self._event(job, "tool.blocked", {"id": call["id"], "name": name, "reason": exc.reason})
        except (ToolError, json.JSONDecodeError) as exc:
            status, output = "error", f"error: {exc}"
        job.messages.append(
            {"role": "tool", "tool_call_id": call["id"], "content": output[:MAX_TOOL_OUTPUT_CHARS]}
        )
        job.steps.append({"step": job.step, "kind": "tool", "name": name, "status": status})
        await self._checkpoint(job)  # saved before the next step: never run twice
        await self._event(
            job, "tool.result", {"id": call["id"], "name": name, "status": status, "output": output[:2000]}
        )

    async def _run_analysis(self, job: JobRecord, spec: JobCreate, principal: Principal) -> Any:
        if self._analysis is None:
            raise InvalidRequestError("Analysis jobs are not available.")
        replay = list(job.calls)

        async def complete(messages: list[dict[str, Any]], response_format: dict[str, Any]) -> str:
            index = len(job.calls) - len(replay)
            if replay:  # answered before a restart: the same answer, no new call
                return replay.pop(0)
            await self._check_stop(job, spec)
            number = job.step + 1
            await self._event(job, "step.started", {"step": number, "kind": "model"})
            request = ChatCompletionCreate.model_validate(
                {"model": spec.model, "messages": messages, "response_format": response_format}
            )
            call = CallContext(
                request_id=f"req_{uuid.uuid4().hex}", principal=principal, tags={"job_id": job.id}
            )
            completion, cost = await self._ask(job, spec, request, call)
            text = completion["choices"][0]["message"].get("content") or ""
            job.calls.append(text)
            job.step = number
            self._add_usage(job, completion, cost)
            job.steps.append({"step": number, "kind": "model", "call": index})
            await self._checkpoint(job)
            await self._event(job, "usage", {"step": number, **job.usage})
            await self._event(job, "step.finished", {"step": number, "kind": "model"})
            return text

        return await self._analysis.run(spec, principal, complete)

    async def _ask(
        self, job: JobRecord, spec: JobCreate, request: ChatCompletionCreate, call: CallContext
    ) -> tuple[Completion, float | None]:
        """One model call; rate limits wait their Retry-After and provider faults get 3 tries, so a
        long run does not fail on a passing 429 or 503."""
        faults = 0
        while True:
            try:
                return await self._chat(request, call)
            except (RateLimitError, UpstreamRateLimitError) as exc:
                wait = min(MAX_RATE_WAIT_S, exc.retry_after if exc.retry_after is not None else 1.0)
            except (UpstreamError, ServiceUnavailableError):
                faults += 1
                if faults >= TRANSIENT_ATTEMPTS:
                    raise
                wait = 2.0**faults
            await asyncio.sleep(wait)
            await self._check_stop(job, spec)

    async def _check_stop(self, job: JobRecord, spec: JobCreate) -> None:
        current = await self._load(job.id)
        if current is not None and current.status == "cancelling":
            raise _Stop("cancelled")
        if job.started_at and time.time() - job.started_at > spec.timeout_s:
            raise _Stop("incomplete", "timeout")
        if spec.max_cost_usd is not None and job.usage["cost_usd"] >= spec.max_cost_usd:
            raise _Stop("incomplete", "max_cost")

    @staticmethod
    def _add_usage(job: JobRecord, completion: Completion, cost: float | None) -> None:
        usage = completion.get("usage") or {}
        job.usage["input_tokens"] += int(usage.get("prompt_tokens") or 0)
        job.usage["output_tokens"] += int(usage.get("completion_tokens") or 0)
        job.usage["cost_usd"] = round(job.usage["cost_usd"] + (cost or 0.0), 10)

    async def _checkpoint(self, job: JobRecord) -> None:
        """Save the run's progress (only while this worker holds the lease)."""
        values = _progress(job)

        def save(current: JobRecord) -> bool:
            if current.worker != job.worker:
                raise _Stop("lost", error=None)
            for name, value in values.items():
                setattr(current, name, value)
            current.lease_until = time.time() + self._lease
            return True

        await self._update(job.id, save)

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
        values = _progress(job)

        def end(current: JobRecord) -> bool:
            if current.status in ENDED:
                return False
            for name, value in values.items():
                setattr(current, name, value)
            current.status = status  # type: ignore[assignment]
            current.ended_at = int(time.time())
            current.result = result if result is not None else _partial(current)
            current.error = error
            current.incomplete_details = {"reason": reason} if reason else None
            current.worker, current.lease_until = None, 0.0
            return True

        ended = await self._update(job.id, end)
        job.event_seq = ended.event_seq
        await self._event(ended, f"job.{status}", {"status": status, "reason": reason, "error": error})
        log.info("job %s %s%s", job.id, status, f" ({reason})" if reason else "")
        await self._notify(ended)

    async def _notify(self, job: JobRecord) -> None:
        summary = {
            "v": 1,
            "job_id": job.id,
            "status": job.status,
            "result": job.result,
            "error": job.error,
            "incomplete_details": job.incomplete_details,
            "usage": job.usage,
        }
        reply_queue = job.spec.get("reply_queue")
        if reply_queue:
            try:
                try:
                    await self._queues.send(reply_queue, summary)
                except Exception:  # most often: nobody created the queue yet
                    await self._queues.ensure_queue(reply_queue)
                    await self._queues.send(reply_queue, summary)
            except Exception as exc:
                log.warning("job %s: reply to queue %s failed (%s)", job.id, reply_queue, type(exc).__name__)
        url = job.spec.get("webhook_url")
        if url and self._deliver_webhook is not None:
            body = json.dumps(summary).encode()
            stamp = str(int(time.time()))
            signature = hmac.new(
                self.webhook_secret(job.id).encode(), f"{stamp}.".encode() + body, hashlib.sha256
            )
            headers = {"x-cirrus-timestamp": stamp, "x-cirrus-signature": f"sha256={signature.hexdigest()}"}
            try:
                await self._deliver_webhook(url, body, headers)
            except ToolBlocked as exc:
                await self._event(job, "webhook.blocked", {"reason": exc.reason})
            except Exception as exc:
                log.warning("job %s: webhook failed (%s)", job.id, type(exc).__name__)

    async def _release(self, job: JobRecord) -> None:
        def release(current: JobRecord) -> bool:
            if current.worker != job.worker:
                return False
            current.worker, current.lease_until = None, 0.0
            return True

        with contextlib.suppress(Exception):
            await asyncio.shield(self._update(job.id, release))

    async def _heartbeat(self, job_id: str, token: str) -> None:
        while True:
            await asyncio.sleep(self._lease / 4)

            def renew(job: JobRecord) -> bool:
                if job.worker != token:
                    return False
                job.lease_until = time.time() + self._lease
                return True

            with contextlib.suppress(CirrusError):
                await self._update(job_id, renew)

    async def _event(self, job: JobRecord, kind: str, data: dict[str, Any]) -> None:
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

    # --- storage --------------------------------------------------------------------------

    async def _load(self, job_id: str) -> JobRecord | None:
        doc = await self._documents.read(CONTAINER, job_id, job_id) if job_id else None
        return JobRecord.model_validate(doc) if doc and doc.get("object") == "job" else None

    async def _update(self, job_id: str, change: Callable[[JobRecord], bool]) -> JobRecord:
        return await records.update(self._documents, CONTAINER, job_id, self._load, change, what="job")


def _progress(job: JobRecord) -> dict[str, Any]:
    """What a run changes on its job as it goes: saved at each checkpoint and at the end."""
    return {name: getattr(job, name) for name in ("messages", "calls", "step", "steps", "usage", "event_seq")}


def _first_messages(spec: JobCreate) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if spec.instructions:
        messages.append({"role": "system", "content": spec.instructions})
    if isinstance(spec.input, str):
        messages.append({"role": "user", "content": spec.input})
    else:
        messages.extend(spec.input or [])  # type: ignore[arg-type]
    return messages


def _unanswered(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last assistant turn's tool calls that have no tool message yet."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.get("role") == "assistant":
            answered = {m.get("tool_call_id") for m in messages[index + 1 :] if m.get("role") == "tool"}
            return [c for c in message.get("tool_calls") or [] if c["id"] not in answered]
    return []


def _partial(job: JobRecord) -> Any:
    """What a run that stopped early had: the agent's last words, or nothing."""
    for message in reversed(job.messages):
        if message.get("role") == "assistant" and message.get("content"):
            return {"output_text": message["content"], "steps": job.step, "partial": True}
    return None


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


__all__ = ["JobService", "validate_body"]


def live_chat(
    chat: Callable[[], Awaitable[Any]], cost: Callable[[Any, int, int], Awaitable[float | None]]
) -> ChatCall:
    """A job's model call through the chat service (routing, fallbacks, key limits, usage)."""

    async def run(request: ChatCompletionCreate, call: CallContext) -> tuple[Completion, float | None]:
        outcome = await (await chat()).create(request, call)
        if outcome.cache.value == "hit":
            return outcome.completion, 0.0
        usage = outcome.completion.get("usage") or {}
        spent = await cost(
            outcome.served_by, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        )
        return outcome.completion, spent

    return run


class AnalysisRunner:
    """Analysis jobs: the task's input (an uploaded file loaded if named), then `run_analysis`."""

    def __init__(
        self,
        files: FileService,
        max_input_tokens: Callable[[str], Awaitable[int | None]],
        *,
        max_file_bytes: int,
    ) -> None:
        self._files = files
        self._max_input_tokens = max_input_tokens
        self._max_file_bytes = max_file_bytes

    def check_input(self, task: str | None, data: Any) -> None:
        from shared.services import analysis  # noqa: PLC0415 - a large module, for analysis jobs only

        try:
            analysis.TASKS[str(task)].input_model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in ("input", *first["loc"]))
            raise InvalidRequestError(f"Invalid value for '{where}': {first['msg']}", param=where) from None

    async def run(self, spec: JobCreate, principal: Principal, complete: Any) -> Any:
        from shared.services import analysis  # noqa: PLC0415

        task = str(spec.task)
        data: Any = dict(spec.input or {})  # type: ignore[arg-type]
        if data.get("file_id"):
            record = await self._files.load(principal, str(data["file_id"]))
            content = bytearray()
            async for chunk in self._files.read(record):
                content += chunk
                if len(content) > self._max_file_bytes:
                    raise InvalidRequestError(
                        f"The file is larger than the {self._max_file_bytes}-byte limit for analysis.",
                        param="input.file_id",
                    )
            data = analysis.load_file(task, data, bytes(content), filename=record.filename)
        result = await analysis.run_analysis(
            task, data, complete, max_input_tokens=await self._max_input_tokens(spec.model)
        )
        return result.output.model_dump(mode="json")
