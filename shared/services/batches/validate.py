"""`start`: the input file is streamed and checked line by line (JSON, unique `custom_id`, `POST`,
the batch's `url`, a body the live endpoint would accept, a model the key may use). Any error fails
the batch, each naming its line. Otherwise the requests are written as chunk blobs, one `chunk`
message per blob is sent, and the batch is `in_progress`.

A line may be as long as a request body (`CIRRUS_MAX_BODY_BYTES`); a longer one is an error, and
is skipped as it streams by rather than read. Checking is synchronous work, so it gives the event
loop a turn every few lines: live requests on the same worker are not held up by a large file."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
from pydantic import BaseModel

from shared.clients.protocols import BlobStore
from shared.errors import CirrusError, InvalidRequestError, PayloadTooLargeError
from shared.models.batches import (
    BATCH_ENDPOINTS,
    MAX_LINES,
    MAX_REPORTED_ERRORS,
    BatchError,
    BatchRecord,
)
from shared.models.validation import validate_body
from shared.services.auth import Principal
from shared.services.batches.blob_layout import chunk_blob
from shared.services.batches.lines import REQUEST_MODELS, Request, numbered_lines
from shared.services.batches.state import BatchState
from shared.services.files import FileService
from shared.services.model_catalog import ModelCatalog

log = logging.getLogger("cirrus.batches")

MAX_CUSTOM_ID = 512
DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024  # CIRRUS_MAX_BODY_BYTES' default
# Let other work on the event loop run after this many lines or bytes of checking: tens of
# microseconds of work at a time. Coarser steps cost live requests on the worker more (bench.batch
# --validate-mib 20: chat p50 2.6x idle with steps of 64 lines, 1.6x with 8) and finer ones gain
# nothing: the rest is the chunk blobs' writes and the CPU they share with everything else.
YIELD_EVERY_LINES = 2
YIELD_EVERY_BYTES = 2 * 1024
# And it takes at most this share of the worker's time: after each chunk it has written, it waits
# in proportion to how long that chunk took. Validating is background work with a 24-hour window;
# a live request on the same worker is not. bench.batch --validate-mib 20 --repeats 5: chat p50
# 1.40x and 1.20x idle with this (validation ~14-16 s), 1.41x to 2.10x without (~8 s), on the
# shared 2-core machine, whose run-to-run noise is large.
BACKGROUND_SHARE = 0.5

OwnerLookup = Callable[[str], Awaitable[Principal]]


class BatchStarter:
    def __init__(
        self,
        state: BatchState,
        blobs: BlobStore,
        files: FileService,
        catalog: ModelCatalog,
        *,
        outputs_container: str,
        chunk_size: int,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        owner: OwnerLookup,
        finalize: Callable[[BatchRecord], Awaitable[None]],
    ) -> None:
        self._state = state
        self._blobs = blobs
        self._files = files
        self._catalog = catalog
        self._outputs = outputs_container
        self._chunk_size = chunk_size
        self._max_line_bytes = max_line_bytes
        self._owner = owner
        self._finalize = finalize

    async def start(self, batch: BatchRecord) -> None:
        if batch.status == "cancelling" and not batch.chunks:
            await self._finalize(batch)  # cancelled before any chunk was written: nothing to run
            return
        if batch.status == "validating":
            principal = await self._owner(batch.owner)
            errors, total, chunks = await self._validate_and_split(batch, principal)
            if errors or not total:
                errors = errors or [BatchError(code="empty_file", message="The input file has no requests.")]
                await self.fail(batch.id, errors)
                return

            def started(record: BatchRecord) -> bool:
                if record.status != "validating":
                    return False
                record.status, record.in_progress_at = "in_progress", int(time.time())
                record.total, record.chunks = total, chunks
                return True

            batch = await self._state.update(batch.id, started)
            if batch.status == "cancelling" and not batch.chunks:
                await self._finalize(batch)
                return
        if batch.status in ("in_progress", "cancelling") and batch.chunks and not batch.fanned_out:
            await asyncio.gather(*(self._state.send("chunk", batch.id, n) for n in range(batch.chunks)))
            await self._state.update(batch.id, _mark_fanned_out)
            log.info("batch %s: %d requests in %d chunks", batch.id, batch.total, batch.chunks)

    async def fail(self, batch_id: str, errors: list[BatchError]) -> None:
        def fail(record: BatchRecord) -> bool:
            if record.status != "validating":
                return False
            record.status, record.failed_at, record.errors = "failed", int(time.time()), errors
            return True

        await self._state.update(batch_id, fail)
        log.info("batch %s failed validation (%d errors)", batch_id, len(errors))

    async def _validate_and_split(
        self, batch: BatchRecord, principal: Principal
    ) -> tuple[list[BatchError], int, int]:
        record = await self._files.load(principal, batch.input_file_id)
        model = REQUEST_MODELS[batch.endpoint]
        errors: list[BatchError] = []
        seen: set[str] = set()
        chunk: list[bytes] = []
        chunks = total = 0
        since_yield = lines_since_yield = 0
        pacer = Pacer(BACKGROUND_SHARE)
        async for number, line in numbered_lines(self._files.read(record), self._max_line_bytes):
            if line is not None and not line.strip():
                continue
            total += 1
            if total > MAX_LINES:
                errors.append(
                    BatchError(code="too_many_requests", message=f"At most {MAX_LINES} lines.", line=number)
                )
                break
            since_yield += len(line) if line is not None else self._max_line_bytes
            lines_since_yield += 1
            if since_yield >= YIELD_EVERY_BYTES or lines_since_yield >= YIELD_EVERY_LINES:
                await asyncio.sleep(0)
                since_yield = lines_since_yield = 0
            try:
                if line is None:
                    raise PayloadTooLargeError(
                        f"This line is longer than {self._max_line_bytes} bytes, the largest request "
                        "body Cirrus accepts."
                    )
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
            chunk.append(orjson.dumps({"line": number, "custom_id": request.custom_id, "body": request.body}))
            if len(chunk) == self._chunk_size and not errors:
                await self._write_chunk(batch.id, chunks, chunk)
                chunks, chunk = chunks + 1, []
                await pacer.rest()
        if chunk and not errors:
            await self._write_chunk(batch.id, chunks, chunk)
            chunks += 1
        return errors, total, chunks

    def _check_line(
        self, line: str, endpoint: str, model: type[BaseModel], principal: Principal, seen: set[str]
    ) -> Request:
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
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
        return Request(0, custom_id, cast(dict[str, Any], body))  # validate_body refuses a non-object

    def _served(self, name: str) -> bool:
        try:
            self._catalog.require(name)
        except CirrusError:
            return False
        return True

    async def _write_chunk(self, batch_id: str, n: int, lines: list[bytes]) -> None:
        await self._blobs.put(
            self._outputs,
            chunk_blob(batch_id, n),
            b"\n".join(lines) + b"\n",
            content_type="application/jsonl",
        )


class Pacer:
    """Keeps background work to `share` of the event loop's time: `rest()` after each piece of it
    sleeps long enough that the piece, with its rest, took 1 / `share` of its own time."""

    def __init__(
        self,
        share: float,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._clock = clock or asyncio.get_running_loop().time
        self._sleep = sleep
        self._idle_per_busy = (1 - share) / share
        self._since = self._clock()

    async def rest(self) -> None:
        await self._sleep((self._clock() - self._since) * self._idle_per_busy)
        self._since = self._clock()


def _mark_fanned_out(batch: BatchRecord) -> bool:
    if batch.fanned_out:
        return False
    batch.fanned_out = True
    return True
