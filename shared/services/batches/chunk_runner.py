"""`chunk`: a chunk's requests run through the same services as live traffic (routing, fallbacks,
key limits, usage charged to the key and tagged with the batch id), a few at a time. Results go to
result blobs every few seconds; a redelivered message skips the requests that already have a
result. A request refused by a rate limit (the key's, or the provider's) waits the `Retry-After`
and tries again, so the batch paces itself to the limits; provider faults are tried three times
(`provider_retries`, the policy jobs share). The last chunk to finish sends `finalize`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from shared.clients.protocols import BlobStore
from shared.errors import AuthenticationError, CirrusError, InvalidRequestError, ServiceUnavailableError
from shared.models.batches import BatchRecord
from shared.models.requests import ChatCompletionCreate, CompletionCreate, EmbeddingCreate
from shared.services.auth import Limits, Principal
from shared.services.batches.blob_layout import read_chunk, read_results, result_names, result_part
from shared.services.batches.lines import REQUEST_MODELS, Request, error_line, succeeded, success_line
from shared.services.batches.state import BatchState, awaits_finalize
from shared.services.calls import CallContext
from shared.services.chat import ChatService
from shared.services.completions import CompletionService, EmbeddingService
from shared.services.limits import KeyLimiter
from shared.services.model_catalog import ModelCatalog
from shared.services.provider_retries import with_provider_retries

log = logging.getLogger("cirrus.batches")

PART_MAX_LINES = 200

# Runs one request body against an endpoint as live traffic would; returns the response body.
Gateway = Callable[[str, BaseModel, CallContext], Awaitable[dict[str, Any]]]
OwnerLookup = Callable[[str], Awaitable[Principal]]
Sleep = Callable[[float], Awaitable[Any]]


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


@dataclass(frozen=True)
class BatchTimings:
    """How often a running chunk saves and looks at its batch; shorter in tests."""

    flush_s: float = 2.0  # how often a running chunk saves its results and its counts
    status_refresh_s: float = 1.0  # how stale a running chunk's view of cancel may be
    # A save that fails is tried again after each of these waits (no new provider call starts
    # meanwhile); when the last one fails too, the chunk stops and its message fails.
    save_retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    # A running chunk writes its batch at least this often, even with nothing new (waiting out
    # rate limits), so the sweeper never takes it for stuck.
    heartbeat_s: float = 60.0


@dataclass
class ChunkRun:
    """A chunk being worked: results not yet saved, and what is known about each custom_id."""

    batch_id: str
    chunk: int
    outcomes: dict[str, bool] = field(default_factory=dict)  # custom_id -> succeeded
    unsaved: list[dict[str, Any]] = field(default_factory=list)
    stop: str | None = None  # "cancelled" or "expired" once the batch says so
    checked_at: float = 0.0
    written_at: float = field(default_factory=time.monotonic)  # the batch, by this chunk
    saving: asyncio.Lock = field(default_factory=asyncio.Lock)
    saves_ok: asyncio.Event = field(default_factory=asyncio.Event)  # clear while a save is failing
    halted: BaseException | None = None  # the save that failed for good: no new provider calls

    def __post_init__(self) -> None:
        self.saves_ok.set()

    def counts(self) -> list[int]:
        """[completed, failed] among the chunk's requests that have a result."""
        return [sum(self.outcomes.values()), sum(not ok for ok in self.outcomes.values())]


class _KeyUnreadable(Exception):
    """The batch's key could not be read: carried past the per-request error handling."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _Halted(Exception):
    """Saving failed for good: the request is left for the redelivered message."""


class ChunkRunner:
    def __init__(
        self,
        state: BatchState,
        blobs: BlobStore,
        catalog: ModelCatalog,
        *,
        outputs_container: str,
        concurrency: int,
        gateway: Gateway,
        owner: OwnerLookup,
        limiter: KeyLimiter | None,
        timings: BatchTimings,
        sleep: Sleep,
    ) -> None:
        self._state = state
        self._blobs = blobs
        self._catalog = catalog
        self._outputs = outputs_container
        self._concurrency = concurrency
        self._gateway = gateway
        self._owner = owner
        self._limiter = limiter
        self._timings = timings
        self._sleep = sleep
        self._gates: dict[str, asyncio.Semaphore] = {}

    def forget(self, batch_id: str) -> None:
        """The batch has ended: drop its concurrency gate."""
        self._gates.pop(batch_id, None)

    async def run(self, batch: BatchRecord, n: int) -> None:
        if n in batch.chunks_done or batch.status not in ("in_progress", "cancelling"):
            # Done already. If the finalize message the last chunk sent was lost (its send failed,
            # so this message is being redelivered), send it again; finalize is idempotent.
            if awaits_finalize(batch):
                await self._state.send("finalize", batch.id)
            return
        run = ChunkRun(batch.id, n)
        names = await result_names(self._blobs, self._outputs, batch.id, n)
        async for _, line in read_results(self._blobs, self._outputs, names):
            run.outcomes.setdefault(line["custom_id"], succeeded(line))
        self._refresh_stop(run, batch)
        todo = [
            r
            async for r in read_chunk(self._blobs, self._outputs, batch.id, n)
            if r.custom_id not in run.outcomes
        ]
        if todo and run.stop is None:
            await self._work(batch, run, todo)
        await self._save(run)
        await self.finished(batch.id, n, run)

    async def finished(self, batch_id: str, n: int, run: ChunkRun | None, *, poisoned: bool = False) -> None:
        """Mark chunk `n` done (its requests failed, if `poisoned`); the last one sends finalize."""

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

        batch = await self._state.update(batch_id, finished)
        if awaits_finalize(batch):
            await self._state.send("finalize", batch_id)

    async def _work(self, batch: BatchRecord, run: ChunkRun, todo: list[Request]) -> None:
        # One gate per batch in this worker, shared by all its chunk messages here: the next chunk
        # takes the slots the last one frees, so chunk boundaries leave no idle gap.
        gate = self._gates.setdefault(batch.id, asyncio.Semaphore(self._concurrency))
        model = REQUEST_MODELS[batch.endpoint]
        saver = asyncio.get_running_loop().create_task(self._save_periodically(run))

        async def one(request: Request) -> None:
            async with gate:
                await self._check_stop(run)
                if run.stop is None:
                    with contextlib.suppress(_Halted):
                        self._record(run, request, await self._execute(batch, run, model, request))

        failure: BaseException | None = None
        try:
            # Structured: when one request fails, the others are cancelled before this returns, so
            # nothing goes on calling the provider for a message that is about to be retried.
            async with asyncio.TaskGroup() as requests:
                for request in todo:
                    requests.create_task(one(request))
        except BaseExceptionGroup as failures:
            failure = _first_error(failures)
        finally:
            saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await saver
        failure = failure or run.halted
        if failure is not None:
            # The answers that did come back are kept, so the redelivered message skips them.
            with contextlib.suppress(Exception):
                await self._save(run)
            raise failure

    async def _execute(
        self, batch: BatchRecord, run: ChunkRun, model: type[BaseModel], request: Request
    ) -> dict[str, Any]:
        """The request's result line. Rate limits and provider faults are waited out by the retry
        policy of queued work (`provider_retries`), in waits that end when the batch is cancelled
        or expires."""
        request_id = f"req_{uuid.uuid4().hex}"
        parsed = model.model_validate(request.body)

        async def attempt() -> dict[str, Any]:
            await self._may_call(run)
            principal = await self._principal(batch)
            call = CallContext(request_id=request_id, principal=principal, tags={"batch_id": batch.id})
            pace = await self._pace(str(getattr(parsed, "model", "")))
            answered: dict[str, Any] = {}
            try:
                answered = await self._gateway(batch.endpoint, parsed, call)
            finally:
                if pace is not None and self._limiter is not None:
                    tokens = int((answered.get("usage") or {}).get("total_tokens") or 0)
                    await self._limiter.settle(pace[0], pace[1], None, tokens)
            return answered

        try:
            body = await with_provider_retries(attempt, lambda seconds: self._wait(run, seconds))
        except _KeyUnreadable as exc:
            raise exc.error from None
        except _Halted:
            raise
        except CirrusError as exc:  # final, or still failing when retries ran out; a revoked key too
            return error_line(request, exc)
        except Exception as exc:
            log.error("batch %s: request %s failed", batch.id, request.custom_id, exc_info=exc)
            return error_line(request, CirrusError("The request failed inside Cirrus."))
        return success_line(request.custom_id, request_id, body)

    @staticmethod
    async def _may_call(run: ChunkRun) -> None:
        """Wait while saves are failing; _Halted once they have failed for good: no provider call
        is paid for while its answer could not be kept."""
        await run.saves_ok.wait()
        if run.halted is not None:
            raise _Halted

    async def _principal(self, batch: BatchRecord) -> Principal:
        """The batch's key as it is now (read again at most every few seconds), so revoking it or
        lowering its budget or models reaches the requests still to come. A revoked, expired or
        deleted key is AuthenticationError, final for each request; a key that could not be read
        (Cosmos unreachable) is not an answer about the key: it fails the message, which the
        queue delivers again."""
        try:
            return await self._owner(batch.owner)
        except AuthenticationError:
            raise
        except Exception as exc:
            raise _KeyUnreadable(exc) from exc

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

    async def _wait(self, run: ChunkRun, seconds: float) -> bool:
        """Sleep unless the batch is cancelled or expires first; False if it did."""
        left = seconds
        while left > 0:
            step = min(self._timings.status_refresh_s, left) or left
            await self._sleep(step)
            left -= step
            await self._check_stop(run)
            if run.stop is not None:
                return False
        return True

    async def _check_stop(self, run: ChunkRun) -> None:
        if run.stop is None and time.monotonic() - run.checked_at >= self._timings.status_refresh_s:
            batch = await self._state.load(run.batch_id)
            if batch is not None:
                self._refresh_stop(run, batch)

    @staticmethod
    def _refresh_stop(run: ChunkRun, batch: BatchRecord) -> None:
        run.checked_at = time.monotonic()
        if batch.status == "cancelling":
            run.stop = "cancelled"
        elif time.time() >= batch.expires_at:
            run.stop = "expired"

    @staticmethod
    def _record(run: ChunkRun, request: Request, line: dict[str, Any]) -> None:
        if request.custom_id not in run.outcomes:
            run.outcomes[request.custom_id] = succeeded(line)
            run.unsaved.append(line)

    async def _save_periodically(self, run: ChunkRun) -> None:
        while True:
            await asyncio.sleep(self._timings.flush_s)
            try:
                await self._save(run)
            except ServiceUnavailableError as exc:
                run.halted = exc  # the requests still running finish; no new one starts
                run.saves_ok.set()
                return

    async def _save(self, run: ChunkRun) -> None:
        """Write the results gathered so far as one more result blob, and the chunk's counts,
        tried again while Blob or Cosmos fails (with no new provider call meanwhile), then
        ServiceUnavailableError.

        A line leaves `unsaved` only once its blob is written, so a save cut short loses nothing."""
        async with run.saving:
            delays = self._timings.save_retry_delays
            for attempt in range(len(delays) + 1):
                try:
                    await self._save_locked(run)
                except Exception as exc:
                    if attempt == len(delays):
                        log.error("batch %s: chunk %d could not save its results", run.batch_id, run.chunk)
                        raise ServiceUnavailableError(
                            "Cirrus could not save the batch's results; the chunk will be retried."
                        ) from exc
                    run.saves_ok.clear()
                    log.warning(
                        "batch %s: saving chunk %d failed (%s); trying again",
                        run.batch_id,
                        run.chunk,
                        type(exc).__name__,
                    )
                    await asyncio.sleep(delays[attempt])
                else:
                    run.saves_ok.set()
                    return

    async def _save_locked(self, run: ChunkRun) -> None:
        while run.unsaved:
            lines = run.unsaved[:PART_MAX_LINES]
            body = "".join(json.dumps(line) + "\n" for line in lines).encode()
            name = result_part(run.batch_id, run.chunk)
            await self._blobs.put(self._outputs, name, body, content_type="application/jsonl")
            del run.unsaved[: len(lines)]
        counts = run.counts()
        heartbeat = time.monotonic() - run.written_at >= self._timings.heartbeat_s

        def count(batch: BatchRecord) -> bool:
            if run.chunk in batch.chunks_done:
                return False
            if batch.chunk_counts.get(str(run.chunk)) == counts and not heartbeat:
                return False
            batch.chunk_counts[str(run.chunk)] = counts
            return True

        await self._state.update(run.batch_id, count)
        if heartbeat:
            run.written_at = time.monotonic()


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error that failed a task group: its first that is not a sibling's cancellation."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_error(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group.exceptions[0]
