"""Batches: OpenAI's Batch API for every model Cirrus serves, run on the batch queue.

A batch moves through OpenAI's statuses, driven by small queue messages (the requests stay in
Blob, the messages name them):

1. `start`: the input file is streamed and checked line by line (JSON, unique `custom_id`,
   `POST`, the batch's `url`, a body the live endpoint would accept, a model the key may use).
   Any error fails the batch, each naming its line. Otherwise the requests are written as chunk
   blobs (`batches/<id>/chunks/<n>.jsonl`), one `chunk` message per blob is sent, and the batch
   is `in_progress`.
2. `chunk`: the chunk's requests run through the same services as live traffic (routing,
   fallbacks, key limits, usage charged to the key and tagged with the batch id), a few at a
   time. Results go to result blobs (`batches/<id>/results/<n>/<part>.jsonl`) every few seconds;
   a redelivered message skips the requests that already have a result. A request refused by a
   rate limit (the key's, or the provider's) waits the `Retry-After` and tries again, so the
   batch paces itself to the limits. The last chunk to finish sends `finalize`.
3. `finalize`: the result blobs become the output and error files (each `custom_id` exactly
   once: the first result written for it wins), requests that never ran become error lines
   (`batch_cancelled`, `batch_expired`, or `batch_request_failed` for a poisoned chunk), and the
   batch ends `completed`, `cancelled` or `expired`.

Every step is idempotent: messages can be delivered twice, workers can die anywhere, and two
workers can hold the same message. State changes are ETag-guarded; counts per chunk are set, not
added. A message that keeps failing reaches the poison queue, whose handler marks its requests
as failed so the batch still ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from shared.clients.protocols import BlobStore, DocumentStore, QueueStore
from shared.errors import (
    CirrusError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamRateLimitError,
    error_body,
)
from shared.models.batches import (
    BATCH_ENDPOINTS,
    ENDED,
    MAX_LINES,
    MAX_REPORTED_ERRORS,
    BatchCreate,
    BatchError,
    BatchMessage,
    BatchRecord,
    RequestCounts,
)
from shared.models.requests import ChatCompletionCreate, CompletionCreate, EmbeddingCreate
from shared.models.validation import validate_body
from shared.services import records
from shared.services.auth import Limits, Principal
from shared.services.calls import CallContext
from shared.services.chat import ChatService
from shared.services.completions import CompletionService, EmbeddingService
from shared.services.files import FileService
from shared.services.limits import KeyLimiter
from shared.services.model_catalog import ModelCatalog

log = logging.getLogger("cirrus.batches")

CONTAINER = "batches"
PART_FLUSH_S = 2.0  # how often a running chunk saves its results and its counts
PART_MAX_LINES = 200
STATUS_REFRESH_S = 1.0  # how stale a running chunk's view of cancel may be
TRANSIENT_ATTEMPTS = 3  # provider 5xx and timeouts, per request
MAX_RATE_WAIT_S = 60.0
MAX_CUSTOM_ID = 512

REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionCreate,
    "/v1/embeddings": EmbeddingCreate,
    "/v1/completions": CompletionCreate,
}

# Runs one request body against an endpoint as live traffic would; returns the response body.
Gateway = Callable[[str, BaseModel, CallContext], Awaitable[dict[str, Any]]]
OwnerLookup = Callable[[str], Awaitable[Principal]]


def live_gateway(
    chat: Callable[[], Awaitable[ChatService]],
    completions: Callable[[], Awaitable[CompletionService]],
    embeddings: Callable[[], Awaitable[EmbeddingService]],
) -> Gateway:
    """The services behind `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings`."""

    async def run(endpoint: str, request: BaseModel, call: CallContext) -> dict[str, Any]:
        if isinstance(request, ChatCompletionCreate):
            return (await (await chat()).create(request, call)).completion
        if isinstance(request, CompletionCreate):
            return (await (await completions()).create(request, call)).body
        if isinstance(request, EmbeddingCreate):
            return (await (await embeddings()).create(request, call)).body
        raise InvalidRequestError(f"Batches do not serve {endpoint}.", param="endpoint")

    return run


@dataclass
class _Request:
    line: int
    custom_id: str
    body: dict[str, Any]


@dataclass
class _ChunkRun:
    """A chunk being worked: results not yet saved, and what is known about each custom_id."""

    batch_id: str
    chunk: int
    outcomes: dict[str, bool] = field(default_factory=dict)  # custom_id -> succeeded
    unsaved: list[dict[str, Any]] = field(default_factory=list)
    stop: str | None = None  # "cancelled" or "expired" once the batch says so
    checked_at: float = 0.0
    saving: asyncio.Lock = field(default_factory=asyncio.Lock)

    def counts(self) -> list[int]:
        """[completed, failed] among the chunk's requests that have a result."""
        return [sum(self.outcomes.values()), sum(not ok for ok in self.outcomes.values())]


class BatchService:
    def __init__(
        self,
        documents: DocumentStore,
        blobs: BlobStore,
        queues: QueueStore,
        files: FileService,
        catalog: ModelCatalog,
        *,
        queue: str,
        outputs_container: str,
        chunk_size: int,
        concurrency: int,
        window_seconds: int,
        gateway: Gateway,
        owner: OwnerLookup,
        limiter: KeyLimiter | None = None,
    ) -> None:
        self._documents = documents
        self._blobs = blobs
        self._queues = queues
        self._files = files
        self._catalog = catalog
        self._queue = queue
        self._outputs = outputs_container
        self._chunk_size = chunk_size
        self._concurrency = concurrency
        self._window = window_seconds
        self._gateway = gateway
        self._owner = owner
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._limiter = limiter

    # --- the HTTP API ---------------------------------------------------------------------

    async def create(self, principal: Principal, body: BatchCreate) -> dict[str, Any]:
        source = await self._files.load(principal, body.input_file_id)
        if source.purpose != "batch":
            raise InvalidRequestError(
                f"File {body.input_file_id} was uploaded with purpose '{source.purpose}', not 'batch'.",
                param="input_file_id",
            )
        now = time.time()
        record = BatchRecord(
            id=f"batch_{uuid.uuid4().hex[:24]}",
            pk="",
            endpoint=body.endpoint,
            input_file_id=body.input_file_id,
            completion_window=body.completion_window,
            created_at=int(now),
            ts=now,
            expires_at=int(now + self._window),
            metadata=body.metadata,
            **principal.stamp(),
        )
        record.pk = record.id
        await self._documents.create(CONTAINER, record.model_dump(mode="json"))
        try:
            await self._send("start", record.id)
        except Exception:
            await self._documents.delete(CONTAINER, record.id, record.pk)
            raise
        log.info("batch %s created (%s, file %s)", record.id, record.endpoint, record.input_file_id)
        return record.public()

    async def get(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        return (await self._load_for(principal, batch_id)).public()

    async def list(self, principal: Principal, *, limit: int, after: str | None) -> dict[str, Any]:
        after_ts = (await self._load_for(principal, after)).ts if after else None
        return await records.owned_page(
            self._documents,
            CONTAINER,
            "batch",
            principal,
            limit=limit,
            after_ts=after_ts,
            public=lambda row: BatchRecord.model_validate(row).public(),
        )

    async def cancel(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        await self._load_for(principal, batch_id)

        def cancel(batch: BatchRecord) -> bool:
            if batch.status == "cancelling":
                return False
            if batch.status not in ("validating", "in_progress"):
                raise ConflictError(f"Cannot cancel a batch with status '{batch.status}'.")
            batch.status = "cancelling"
            batch.cancelling_at = int(time.time())
            return True

        batch = await self._update(batch_id, cancel)
        if batch.chunks and len(batch.chunks_done) >= batch.chunks:
            await self._send("finalize", batch_id)  # nothing is running to notice the cancel
        log.info("batch %s cancelling", batch_id)
        return batch.public()

    async def _load_for(self, principal: Principal, batch_id: str) -> BatchRecord:
        batch = await self._load(batch_id)
        if batch is None or not principal.can_see(batch.owner, batch.team):
            raise NotFoundError(f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch

    # --- the queue ------------------------------------------------------------------------

    async def handle(self, raw: Any) -> None:
        """One message of the batch queue. Raises to have the host retry it."""
        message = BatchMessage.model_validate(raw)
        batch = await self._load(message.batch_id)
        if batch is None:
            log.warning("batch %s: no such batch; message dropped", message.batch_id)
            return
        if message.kind == "start":
            await self._start(batch)
        elif message.kind == "chunk" and message.chunk is not None:
            await self._run_chunk(batch, message.chunk)
        elif message.kind == "finalize":
            await self._finalize(batch)

    async def handle_poison(self, raw: Any) -> None:
        """A message that failed every delivery: fail what it stood for, so the batch still ends."""
        try:
            message = BatchMessage.model_validate(raw)
        except Exception:
            log.error("unreadable message on the batch poison queue dropped")
            return
        batch = await self._load(message.batch_id)
        if batch is None or batch.status in ENDED:
            return
        log.error("batch %s: %s message poisoned", batch.id, message.kind)
        if message.kind == "chunk" and message.chunk is not None:
            await self._chunk_finished(batch.id, message.chunk, None, poisoned=True)
            return
        failure = BatchError(
            code="batch_failed", message=f"Cirrus could not {message.kind} this batch; see the server log."
        )

        def fail(record: BatchRecord) -> bool:
            if record.status in ENDED:
                return False
            record.status, record.failed_at, record.errors = "failed", int(time.time()), [failure]
            return True

        await self._update(batch.id, fail)

    async def _send(self, kind: str, batch_id: str, chunk: int | None = None) -> None:
        message = BatchMessage(kind=kind, batch_id=batch_id, chunk=chunk)  # type: ignore[arg-type]
        await self._queues.send(self._queue, message.model_dump(exclude_none=True))

    # --- start: validate and fan out ------------------------------------------------------

    async def _start(self, batch: BatchRecord) -> None:
        if batch.status == "cancelling" and not batch.fanned_out:
            await self._finalize(batch)
            return
        if batch.status == "validating":
            principal = await self._owner(batch.owner)
            errors, total, chunks = await self._validate_and_split(batch, principal)
            if errors or not total:
                errors = errors or [BatchError(code="empty_file", message="The input file has no requests.")]
                await self._fail(batch.id, errors)
                return

            def started(record: BatchRecord) -> bool:
                if record.status != "validating":
                    return False
                record.status, record.in_progress_at = "in_progress", int(time.time())
                record.total, record.chunks = total, chunks
                return True

            batch = await self._update(batch.id, started)
            if batch.status == "cancelling" and not batch.chunks:
                await self._finalize(batch)
                return
        if batch.status in ("in_progress", "cancelling") and batch.chunks and not batch.fanned_out:
            await asyncio.gather(*(self._send("chunk", batch.id, n) for n in range(batch.chunks)))
            await self._update(batch.id, _mark_fanned_out)
            log.info("batch %s: %d requests in %d chunks", batch.id, batch.total, batch.chunks)

    async def _validate_and_split(
        self, batch: BatchRecord, principal: Principal
    ) -> tuple[list[BatchError], int, int]:
        record = await self._files.load(principal, batch.input_file_id)
        model = REQUEST_MODELS[batch.endpoint]
        errors: list[BatchError] = []
        seen: set[str] = set()
        chunk: list[str] = []
        chunks = total = 0
        async for number, line in _lines(self._files.read(record)):
            if not line.strip():
                continue
            total += 1
            if total > MAX_LINES:
                errors.append(
                    BatchError(code="too_many_requests", message=f"At most {MAX_LINES} lines.", line=number)
                )
                break
            try:
                request = self._check_line(line, batch.endpoint, model, principal, seen)
            except InvalidRequestError as exc:
                if len(errors) < MAX_REPORTED_ERRORS:
                    errors.append(
                        BatchError(
                            code=exc.code or "invalid_request",
                            message=exc.message,
                            param=exc.param,
                            line=number,
                        )
                    )
                continue
            chunk.append(json.dumps({"line": number, "custom_id": request.custom_id, "body": request.body}))
            if len(chunk) == self._chunk_size and not errors:
                await self._write_chunk(batch.id, chunks, chunk)
                chunks, chunk = chunks + 1, []
        if chunk and not errors:
            await self._write_chunk(batch.id, chunks, chunk)
            chunks += 1
        return errors, total, chunks

    def _check_line(
        self, line: str, endpoint: str, model: type[BaseModel], principal: Principal, seen: set[str]
    ) -> _Request:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            raise InvalidRequestError("This line is not valid JSON.", code="invalid_json") from None
        if not isinstance(item, dict):
            raise InvalidRequestError("Each line must be a JSON object.", code="invalid_json")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
            raise InvalidRequestError(
                f"'custom_id' must be a string of 1 to {MAX_CUSTOM_ID} characters.", param="custom_id"
            )
        if custom_id in seen:
            raise InvalidRequestError(
                f"Duplicate custom_id '{custom_id}'.", param="custom_id", code="duplicate_custom_id"
            )
        seen.add(custom_id)
        if item.get("method") != "POST":
            raise InvalidRequestError("'method' must be POST.", param="method")
        if item.get("url") != endpoint:
            supported = item.get("url") in BATCH_ENDPOINTS
            raise InvalidRequestError(
                f"'url' must be the batch's endpoint, {endpoint}."
                if supported
                else f"'url' must be one of {', '.join(BATCH_ENDPOINTS)}.",
                param="url",
            )
        body = item.get("body")
        request = validate_body(model, body)  # the live endpoint's own rules and messages
        if getattr(request, "stream", None):
            raise InvalidRequestError("Batch requests cannot stream.", param="body.stream")
        name = getattr(request, "model", "")
        if not self._served(name):
            raise InvalidRequestError(
                f"The model `{name}` does not exist.", param="body.model", code="model_not_found"
            )
        if not principal.may_use(name):
            raise InvalidRequestError(
                f"This API key is not allowed to use the model `{name}`.",
                param="body.model",
                code="model_not_allowed",
            )
        return _Request(0, custom_id, body)

    def _served(self, name: str) -> bool:
        try:
            self._catalog.require(name)
        except CirrusError:
            return False
        return True

    async def _write_chunk(self, batch_id: str, n: int, lines: list[str]) -> None:
        await self._blobs.put(
            self._outputs,
            _chunk_blob(batch_id, n),
            ("\n".join(lines) + "\n").encode(),
            content_type="application/jsonl",
        )

    async def _fail(self, batch_id: str, errors: list[BatchError]) -> None:
        def fail(record: BatchRecord) -> bool:
            if record.status != "validating":
                return False
            record.status, record.failed_at, record.errors = "failed", int(time.time()), errors
            return True

        await self._update(batch_id, fail)
        log.info("batch %s failed validation (%d errors)", batch_id, len(errors))

    # --- chunk: run the requests ----------------------------------------------------------

    async def _run_chunk(self, batch: BatchRecord, n: int) -> None:
        if n in batch.chunks_done or batch.status not in ("in_progress", "cancelling"):
            return
        run = _ChunkRun(batch.id, n)
        for line in await self._result_lines(batch.id, n):
            run.outcomes.setdefault(line["custom_id"], _succeeded(line))
        self._refresh_stop(run, batch)
        todo = [r for r in await self._chunk_requests(batch.id, n) if r.custom_id not in run.outcomes]
        if todo and run.stop is None:
            try:
                principal = await self._owner(batch.owner)
            except CirrusError as exc:  # the key was revoked or has expired since the batch began
                for request in todo:
                    self._record(run, request, _error_line(request, exc))
            else:
                await self._work(batch, run, principal, todo)
        await self._save(run)
        await self._chunk_finished(batch.id, n, run)

    async def _work(
        self, batch: BatchRecord, run: _ChunkRun, principal: Principal, todo: list[_Request]
    ) -> None:
        # One gate per batch in this worker, shared by all its chunk messages here: the next chunk
        # takes the slots the last one frees, so chunk boundaries leave no idle gap.
        gate = self._gates.setdefault(batch.id, asyncio.Semaphore(self._concurrency))
        model = REQUEST_MODELS[batch.endpoint]
        saver = asyncio.get_running_loop().create_task(self._save_periodically(run))

        async def one(request: _Request) -> None:
            async with gate:
                await self._check_stop(run)
                if run.stop is None:
                    self._record(run, request, await self._execute(batch, run, principal, model, request))

        try:
            await asyncio.gather(*(one(r) for r in todo))
        finally:
            saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await saver

    async def _execute(
        self,
        batch: BatchRecord,
        run: _ChunkRun,
        principal: Principal,
        model: type[BaseModel],
        request: _Request,
    ) -> dict[str, Any]:
        call = CallContext(
            request_id=f"req_{uuid.uuid4().hex}", principal=principal, tags={"batch_id": batch.id}
        )
        parsed = model.model_validate(request.body)
        transient = 0
        while True:
            try:
                pace = await self._pace(str(getattr(parsed, "model", "")))
                answered: dict[str, Any] = {}
                try:
                    body = answered = await self._gateway(batch.endpoint, parsed, call)
                finally:
                    if pace is not None and self._limiter is not None:
                        tokens = int((answered.get("usage") or {}).get("total_tokens") or 0)
                        await self._limiter.settle(pace[0], pace[1], None, tokens)
            except (RateLimitError, UpstreamRateLimitError) as exc:
                wait = min(MAX_RATE_WAIT_S, exc.retry_after if exc.retry_after is not None else 1.0)
                if not await self._wait(run, wait + random.uniform(0, 0.5)):  # noqa: S311 - jitter
                    return _error_line(request, exc)
                continue
            except (UpstreamError, ServiceUnavailableError) as exc:
                transient += 1
                if transient >= TRANSIENT_ATTEMPTS or not await self._wait(run, 2**transient):
                    return _error_line(request, exc)
                continue
            except CirrusError as exc:
                return _error_line(request, exc)
            except Exception as exc:
                log.error("batch %s: request %s failed", batch.id, request.custom_id, exc_info=exc)
                return _error_line(request, CirrusError("The request failed inside Cirrus."))
            return {
                "id": f"batch_req_{uuid.uuid4().hex}",
                "custom_id": request.custom_id,
                "response": {"status_code": 200, "request_id": call.request_id, "body": body},
                "error": None,
            }

    async def _pace(self, model: str) -> tuple[Principal, Any] | None:
        """Count the request against the model's rpm/tpm from the model file, shared by every
        instance like a key's limits; a 429 here makes the request wait like any rate limit."""
        if self._limiter is None:
            return None
        rpm, tpm = self._catalog.rate_limits(model)
        if rpm is None and tpm is None:
            return None
        name = "model_" + hashlib.sha256(model.encode()).hexdigest()[:16]
        principal = Principal(key_id=name, is_master=False, limits=Limits(rpm=rpm, tpm=tpm))
        admission = await self._limiter.admit(principal, lambda: None)
        return (principal, admission) if admission is not None and admission.needs_settling else None

    async def _wait(self, run: _ChunkRun, seconds: float) -> bool:
        """Sleep unless the batch is cancelled or expires first; False if it did."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(min(STATUS_REFRESH_S, deadline - time.monotonic()))
            await self._check_stop(run)
            if run.stop is not None:
                return False
        return True

    async def _check_stop(self, run: _ChunkRun) -> None:
        if run.stop is None and time.monotonic() - run.checked_at >= STATUS_REFRESH_S:
            batch = await self._load(run.batch_id)
            if batch is not None:
                self._refresh_stop(run, batch)

    @staticmethod
    def _refresh_stop(run: _ChunkRun, batch: BatchRecord) -> None:
        run.checked_at = time.monotonic()
        if batch.status == "cancelling":
            run.stop = "cancelled"
        elif time.time() >= batch.expires_at:
            run.stop = "expired"

    @staticmethod
    def _record(run: _ChunkRun, request: _Request, line: dict[str, Any]) -> None:
        if request.custom_id not in run.outcomes:
            run.outcomes[request.custom_id] = _succeeded(line)
            run.unsaved.append(line)

    async def _save_periodically(self, run: _ChunkRun) -> None:
        while True:
            await asyncio.sleep(PART_FLUSH_S)
            await self._save(run)

    async def _save(self, run: _ChunkRun) -> None:
        """Write the results gathered so far as one more result blob, and the chunk's counts.

        A line leaves `unsaved` only once its blob is written, so a save cut short loses nothing."""
        async with run.saving:
            await self._save_locked(run)

    async def _save_locked(self, run: _ChunkRun) -> None:
        while run.unsaved:
            lines = run.unsaved[:PART_MAX_LINES]
            part = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"  # name order is write order
            name = _results_prefix(run.batch_id, run.chunk) + part
            body = "".join(json.dumps(line) + "\n" for line in lines).encode()
            await self._blobs.put(self._outputs, name, body, content_type="application/jsonl")
            del run.unsaved[: len(lines)]
        counts = run.counts()

        def count(batch: BatchRecord) -> bool:
            if run.chunk in batch.chunks_done or batch.chunk_counts.get(str(run.chunk)) == counts:
                return False
            batch.chunk_counts[str(run.chunk)] = counts
            return True

        await self._update(run.batch_id, count)

    async def _chunk_finished(
        self, batch_id: str, n: int, run: _ChunkRun | None, *, poisoned: bool = False
    ) -> None:
        def finished(batch: BatchRecord) -> bool:
            if n in batch.chunks_done:
                return False
            batch.chunks_done.append(n)
            if poisoned:
                batch.poisoned_chunks.append(n)
            if run is not None:
                batch.chunk_counts[str(n)] = run.counts()
            if len(batch.chunks_done) >= batch.chunks and batch.status == "in_progress":
                batch.status, batch.finalizing_at = "finalizing", int(time.time())
            return True

        batch = await self._update(batch_id, finished)
        if len(batch.chunks_done) >= batch.chunks and batch.status in ("finalizing", "cancelling"):
            await self._send("finalize", batch_id)

    async def _chunk_requests(self, batch_id: str, n: int) -> list[_Request]:
        data = await self._blobs.get(self._outputs, _chunk_blob(batch_id, n))
        if data is None:
            raise LookupError(f"batch {batch_id} has no chunk {n}")
        requests = []
        for text in data.decode().splitlines():
            if text.strip():
                item = json.loads(text)
                requests.append(_Request(item["line"], item["custom_id"], item["body"]))
        return requests

    async def _result_lines(self, batch_id: str, n: int | None = None) -> list[dict[str, Any]]:
        """Every result written for the chunk (or the whole batch), oldest blob first."""
        prefix = _results_prefix(batch_id, n) if n is not None else f"batches/{batch_id}/results/"
        lines = []
        for name in await self._blobs.names(self._outputs, prefix):
            data = await self._blobs.get(self._outputs, name)
            lines += [json.loads(t) for t in (data or b"").decode().splitlines() if t.strip()]
        return lines

    # --- finalize: output and error files -------------------------------------------------

    async def _finalize(self, batch: BatchRecord) -> None:
        if batch.status not in ("finalizing", "cancelling", "in_progress", "validating"):
            return
        if batch.chunks and len(batch.chunks_done) < batch.chunks:
            return  # a chunk is still running; the last one to finish sends finalize again
        winners: dict[str, dict[str, Any]] = {}
        for line in await self._result_lines(batch.id):
            winners.setdefault(line["custom_id"], line)  # the first result written wins
        expired = time.time() >= batch.expires_at
        reason = "batch_cancelled" if batch.status == "cancelling" else "batch_expired" if expired else None
        missing: list[dict[str, Any]] = []
        for n in range(batch.chunks):
            with contextlib.suppress(LookupError):
                for request in await self._chunk_requests(batch.id, n):
                    if request.custom_id not in winners:
                        code = (
                            "batch_request_failed"
                            if n in batch.poisoned_chunks
                            else reason or "batch_request_failed"
                        )
                        missing.append(_missing_line(request, code))
        ok = [line for line in winners.values() if _succeeded(line)]
        failed = [line for line in winners.values() if not _succeeded(line)] + missing
        owner = Principal(key_id=batch.owner, is_master=False, team_id=batch.team)
        output_id = await self._write_file(owner, batch.id, "output", ok)
        error_id = await self._write_file(owner, batch.id, "errors", failed)
        usage = _usage(ok)
        ended = (
            "cancelled" if batch.status == "cancelling" else "expired" if missing and expired else "completed"
        )

        def end(record: BatchRecord) -> bool:
            if record.status in ENDED:
                return False
            now = int(time.time())
            record.status = ended  # type: ignore[assignment]
            setattr(record, f"{ended}_at", now)
            record.finalizing_at = record.finalizing_at or now
            record.output_file_id, record.error_file_id = output_id, error_id
            record.chunk_counts = {"all": [len(ok), len(failed)]}
            record.total = record.total or len(ok) + len(failed)
            record.usage = usage
            return True

        await self._update(batch.id, end)
        self._gates.pop(batch.id, None)
        log.info("batch %s %s: %d succeeded, %d failed", batch.id, ended, len(ok), len(failed))

    async def _write_file(
        self, owner: Principal, batch_id: str, kind: str, lines: list[dict[str, Any]]
    ) -> str | None:
        if not lines:
            return None
        file_id = "file-" + hashlib.sha256(f"{batch_id}/{kind}".encode()).hexdigest()[:24]
        await self._files.create(
            owner,
            filename=f"{batch_id}_{kind}.jsonl",
            purpose="batch_output",
            content=_jsonl(lines),
            container=self._outputs,
            file_id=file_id,
            # Its own blob per attempt: two finalizers of one batch must not write one blob at once.
            blob=f"batches/{batch_id}/{kind}-{uuid.uuid4().hex[:12]}.jsonl",
            content_type="application/jsonl",
        )
        return file_id

    # --- storage ------------------------------------------------------------------------

    async def _load(self, batch_id: str) -> BatchRecord | None:
        doc = await self._documents.read(CONTAINER, batch_id, batch_id) if batch_id else None
        return BatchRecord.model_validate(doc) if doc else None

    async def _update(self, batch_id: str, change: Callable[[BatchRecord], bool]) -> BatchRecord:
        return await records.update(self._documents, CONTAINER, batch_id, self._load, change, what="batch")


def _mark_fanned_out(batch: BatchRecord) -> bool:
    if batch.fanned_out:
        return False
    batch.fanned_out = True
    return True


def _succeeded(line: dict[str, Any]) -> bool:
    return bool(line.get("response")) and line["response"].get("status_code") == 200


def _error_line(request: _Request, exc: CirrusError) -> dict[str, Any]:
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": request.custom_id,
        "response": {"status_code": exc.status, "request_id": None, "body": error_body(exc)},
        "error": None,
    }


_MISSING_MESSAGES = {
    "batch_cancelled": "The batch was cancelled before this request ran.",
    "batch_expired": "The batch expired before this request ran.",
    "batch_request_failed": "This request could not be processed; see the server log.",
}


def _missing_line(request: _Request, code: str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": request.custom_id,
        "response": None,
        "error": {"code": code, "message": _MISSING_MESSAGES[code]},
    }


def _usage(lines: Iterable[dict[str, Any]]) -> dict[str, int]:
    total = {"input_tokens": 0, "output_tokens": 0}
    for line in lines:
        usage = (line["response"].get("body") or {}).get("usage") or {}
        total["input_tokens"] += int(usage.get("prompt_tokens") or 0)
        total["output_tokens"] += int(usage.get("completion_tokens") or 0)
    return total


async def _jsonl(lines: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for start in range(0, len(lines), 500):
        yield "".join(json.dumps(line) + "\n" for line in lines[start : start + 500]).encode()


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, str]]:
    """Numbered lines (from 1) of a byte stream, never holding more than one line and one chunk."""
    number, rest = 0, b""
    async for chunk in chunks:
        rest += chunk
        *complete, rest = rest.split(b"\n")
        for raw in complete:
            number += 1
            yield number, raw.decode("utf-8", "replace")
    if rest:
        yield number + 1, rest.decode("utf-8", "replace")


def _chunk_blob(batch_id: str, n: int) -> str:
    return f"batches/{batch_id}/chunks/{n:05d}.jsonl"


def _results_prefix(batch_id: str, n: int) -> str:
    return f"batches/{batch_id}/results/{n:05d}/"


__all__ = ["BatchService", "RequestCounts"]
