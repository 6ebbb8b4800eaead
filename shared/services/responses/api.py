"""The Responses API: create (JSON, stream or background), get (or follow its events), cancel,
delete, and the input items.

A response runs as one chat completion through the chat service, so routing, fallbacks, the
key's models and limits, usage (endpoint `responses`), cost and telemetry are chat's. A model with
a deployment that serves `/responses` itself (the model file's `supported_endpoints`) goes through
the router's Responses entry point instead, which passes the request through to such a deployment
(passthrough.py) and sends its chat translation to any other; the same limits and metering apply,
and Cirrus stores the answer either way (background responses are always translated). A stored
response (`store` is true unless the client says otherwise) is written once it has ended, before
its last event, so `previous_response_id` can name it as soon as the client has it. A background
response is stored at once, `queued`, and runs as a job on the jobs queue (jobs/response_step.py);
its events are the job's events, so they can be replayed and followed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from shared.clients.protocols import BlobStore, DocumentStore, LLMRouter, ServedBy
from shared.errors import InvalidRequestError, as_cirrus_error
from shared.models.jobs import MAX_TIMEOUT_S, ResponseJobSpec
from shared.models.responses import ENDED, ResponseCreate, ResponseRecord
from shared.services.auth import Principal
from shared.services.cache import CacheStatus
from shared.services.calls import DEFAULT_OUTPUT_CAP, CallContext, Meter, Metering, metered
from shared.services.chat import ChatService, OpenStream
from shared.services.model_catalog import ModelCatalog
from shared.services.responses import passthrough, translate
from shared.services.responses.background import ResponseRunner
from shared.services.responses.conversation import Conversation, check_call_outputs
from shared.services.responses.store import ResponseStore, chain_after
from shared.services.responses.stream import ResponseEvents

log = logging.getLogger("cirrus.responses")

Event = dict[str, Any]
Item = dict[str, Any]
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_NOT_STORED = "The response was generated but could not be stored: it cannot be retrieved or continued."
# Why a job that ended without saving an answer did, as the response's error message.
_STOPPED = {
    "timeout": "The background response ran out of time.",
    "max_cost": "The background response reached its cost cap (CIRRUS_RESPONSE_MAX_COST_USD).",
}


class BackgroundRuns(Protocol):
    """What the job runner does for background responses (JobService)."""

    async def enqueue(
        self, principal: Principal, job_id: str, spec: dict[str, Any], events: list[Event]
    ) -> None: ...
    async def stop(self, job_id: str) -> None: ...
    async def run_status(self, job_id: str) -> Any: ...
    # Not `async def`: an iterator is returned at once, as JobService.follow does, not awaited.
    def follow(self, job_id: str, after: int) -> AsyncIterator[tuple[int, str, Any]]: ...


@dataclass
class Created:
    """What `create` made: a Response, or its events (a stream), and who answered."""

    response: dict[str, Any] | None = None
    events: AsyncIterator[Event] | None = None
    served_by: ServedBy | None = None


class ResponsesService:
    def __init__(
        self,
        documents: DocumentStore,
        blobs: BlobStore,
        catalog: ModelCatalog,
        llm: LLMRouter,
        *,
        chat: Callable[[], Awaitable[ChatService]],
        metering: Callable[[], Awaitable[Metering]],
        jobs: Callable[[], BackgroundRuns],
        blob_container: str,
        max_cost_usd: float | None,
    ) -> None:
        """`jobs()`: the job runner (late-bound: the job runner runs background responses with
        `runner`, so each needs the other)."""
        self._store = ResponseStore(documents, blobs, blob_container)
        self._conversation = Conversation(llm, catalog)
        self._chat = chat
        self._metering = metering
        self._llm = llm
        self._jobs = jobs
        self._max_cost = max_cost_usd
        self.runner = ResponseRunner(self._store, self._conversation)

    # --- create -----------------------------------------------------------------------------------

    async def create(self, request: ResponseCreate, call: CallContext) -> Created:
        principal = call.principal
        self._conversation.check(request, principal)
        chain: list[str] = []
        if request.previous_response_id:
            chain = chain_after(await self._previous(principal, request.previous_response_id))
        history = await self._store.history(principal, chain)
        check_call_outputs(request, history)
        response_id = translate.new_id("resp")
        record = ResponseRecord(
            id=response_id,
            pk=response_id,
            **principal.stamp(),
            model=request.model,
            status="queued" if request.background else "in_progress",
            created_at=time.time(),
            background=bool(request.background),
            previous_response_id=request.previous_response_id,
            chain=chain,
            request=request.model_dump(
                mode="json", exclude_unset=True, by_alias=True, exclude={"input", "client_metadata"}
            ),
            input_items=translate.stored_items(request.items()),
        )
        if request.background:
            return await self._start_background(record, principal, follow=bool(request.stream))
        call = dataclasses.replace(call, endpoint="responses", tags={**call.tags, "response_id": response_id})
        if self._llm.serves_responses(request.model):
            return await self._create_native(request, call, record, history)
        chat_request = self._conversation.chat_request(
            request, history, record.input_items, stream=bool(request.stream)
        )
        chat = await self._chat()
        if request.stream:
            stream = await chat.open_stream(chat_request, call)  # a failure before it keeps its status
            record.model = stream.served_by.model
            return Created(events=self._live(record, request.stored, stream), served_by=stream.served_by)
        outcome = await chat.create(chat_request, call)
        completion = outcome.completion
        record.output, record.status, record.incomplete_details = translate.output_from_completion(completion)
        record.model = str(completion.get("model") or request.model)
        record.usage = translate.response_usage(completion.get("usage"))
        record.completed_at = time.time()
        if request.stored:
            await self._store.create(record)
        return Created(response=translate.public(record), served_by=outcome.served_by)

    # --- a model with a deployment that serves /responses itself ---------------------------------

    async def _create_native(
        self, request: ResponseCreate, call: CallContext, record: ResponseRecord, history: list[Item]
    ) -> Created:
        """Through the router's Responses entry point: as it is to a deployment that serves
        `/responses` (passthrough.py), as its chat translation to any other; checked, limited and
        metered here as the chat service would, and stored the same way whichever answered."""
        body = passthrough.native_body(request, history)

        def chat_params() -> dict[str, Any]:
            return self._conversation.chat_request(request, history, record.input_items).upstream_params()

        meter = await self._meter(request, call, record, history)
        if request.stream:
            stream = await meter.call(self._llm.responses_stream(body, chat_params))
            record.model = stream.served_by.model
            relayed = metered(stream, meter)  # from here it closes the upstream stream and the meter
            if stream.wire == "responses":
                return Created(events=self._native_live(record, request, relayed), served_by=stream.served_by)
            chunks = OpenStream(stream.served_by, relayed, CacheStatus.OFF, None, usage=lambda: stream.usage)
            return Created(events=self._live(record, request.stored, chunks), served_by=stream.served_by)
        result = await meter.call(self._llm.responses(body, chat_params))
        meter.record_output(result.body.get("output" if result.wire == "responses" else "choices"))
        meter.finish(
            served_by=result.served_by,
            input_tokens=int(result.usage.get("prompt_tokens") or 0),
            output_tokens=int(result.usage.get("completion_tokens") or 0),
            usage_estimated=result.usage_estimated,
            finish_reasons=result.finish_reasons,
        )
        record.model = result.served_by.model
        record.completed_at = time.time()
        if result.wire == "responses":
            passthrough.take_answer(record, result.body)
            response = passthrough.presented(result.body, record, request)
        else:
            record.output, record.status, record.incomplete_details = translate.output_from_completion(
                result.body
            )
            record.usage = translate.response_usage(result.usage)
            response = translate.public(record)
        if request.stored:
            await self._store.create(record)
        return Created(response=response, served_by=result.served_by)

    async def _meter(
        self, request: ResponseCreate, call: CallContext, record: ResponseRecord, history: list[Item]
    ) -> Meter:
        """The key's limits, then the call's meter (as the chat service opens one for a chat)."""
        model = request.model

        def estimate() -> tuple[int, int]:
            messages = translate.system_message(request.instructions) + translate.to_messages(
                [*history, *record.input_items]
            )
            cap = request.max_output_tokens or self._llm.limits(model).max_output_tokens
            return self._llm.count_tokens(model, messages), cap or DEFAULT_OUTPUT_CAP

        metering = await self._metering()
        return await metering.start(
            "responses",
            model,
            call,
            estimate=estimate,
            content=record.input_items,
            stream=bool(request.stream),
            attributes={
                "gen_ai.request.max_tokens": request.max_output_tokens,
                "gen_ai.request.temperature": request.temperature,
                "gen_ai.request.top_p": request.top_p,
            },
        )

    async def _native_live(
        self, record: ResponseRecord, request: ResponseCreate, events: AsyncIterator[Event]
    ) -> AsyncIterator[Event]:
        """A passed-through stream's events as the client sees them; stored (if asked) before the
        closing event, and ended in band (an `error` event, then `response.failed`) by a failure."""
        native = passthrough.NativeEvents(record, request)
        try:
            try:
                async for event in events:
                    native.present(event)
                    if event.get("type") in TERMINAL and request.stored:
                        passthrough.take_answer(record, event["response"])
                        record.completed_at = time.time()
                        if not await self._stored(record):
                            for ending in native.fail("service_unavailable", _NOT_STORED):
                                yield ending
                            return
                    yield event
            except Exception as exc:  # after the first event: in band, never a cut stream
                error = as_cirrus_error(exc, record.id)
                closing = native.fail(error.code or error.type, error.message, error.param)
                if request.stored:
                    passthrough.take_answer(record, closing[-1]["response"])
                    record.completed_at = time.time()
                    await self._stored(record)
                for event in closing:
                    yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # an async generator

    async def _stored(self, record: ResponseRecord) -> bool:
        try:
            await self._store.create(record)
        except Exception as exc:
            error = as_cirrus_error(exc, record.id)
            log.error("response %s could not be stored (%s)", record.id, error.code or error.type)
            return False
        return True

    async def _previous(self, principal: Principal, response_id: str) -> ResponseRecord:
        """The response a new one continues: stored, the caller's, and ended."""
        previous = await self._store.load(response_id)
        if previous is None or not principal.can_see(previous.owner, previous.team):
            raise InvalidRequestError(
                f"Previous response with id '{response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        previous = await self._reconciled(previous)
        if previous.status not in ENDED:
            raise InvalidRequestError(
                f"Previous response with id '{response_id}' is still {previous.status}; wait until it ends.",
                param="previous_response_id",
            )
        return previous

    async def _live(self, record: ResponseRecord, keep: bool, stream: OpenStream) -> AsyncIterator[Event]:
        """A streamed response's events; it is stored (if `keep`) before its last event."""
        events = ResponseEvents(translate.snapshot(record))
        try:
            for event in events.opened():
                yield event
            try:
                async for chunk in stream.chunks:
                    for event in events.feed(chunk):
                        yield event
            except Exception as exc:  # after the first chunk: an in-band error, never a cut stream
                error = as_cirrus_error(exc, record.id)
                closing = events.fail(error.code or error.type, error.message, error.param)
            else:
                closing = events.finish(stream.usage())
            if keep:
                closing = await self._keep(record, events, closing)
            for event in closing:
                yield event
        finally:
            close = getattr(stream.chunks, "aclose", None)
            if close is not None:
                await close()  # the client went away: the chat relay meters and closes the provider

    async def _keep(
        self, record: ResponseRecord, events: ResponseEvents, closing: list[Event]
    ) -> list[Event]:
        final = events.response or {}
        record.status = final.get("status", "failed")
        record.output, record.usage = final.get("output") or [], final.get("usage")
        record.error, record.incomplete_details = final.get("error"), final.get("incomplete_details")
        record.completed_at = time.time()
        try:
            await self._store.create(record)
        except Exception as exc:
            error = as_cirrus_error(exc, record.id)
            log.error("response %s could not be stored (%s)", record.id, error.code or error.type)
            # Said in band: the client would otherwise chain to a response that does not exist.
            return [event for event in closing if event["type"] not in TERMINAL] + events.fail(
                "service_unavailable", _NOT_STORED
            )
        return closing

    async def _start_background(
        self, record: ResponseRecord, principal: Principal, *, follow: bool
    ) -> Created:
        job_id = record.job_id = f"job_{record.id}"
        record = await self._store.create(record)
        spec = ResponseJobSpec(
            model=record.model, response_id=record.id, max_cost_usd=self._max_cost, timeout_s=MAX_TIMEOUT_S
        )
        opened = ResponseEvents(translate.snapshot(record)).opened(queued=True)
        try:
            await self._jobs().enqueue(principal, job_id, spec.model_dump(mode="json"), opened)
        except Exception:
            with contextlib.suppress(Exception):
                await self._store.delete(record)
            raise
        log.info("response %s queued as job %s", record.id, job_id)
        if follow:
            return Created(events=self._follow(record, None))
        return Created(response=translate.public(record))

    # --- read, follow, cancel, delete -----------------------------------------------------------------

    async def get(self, principal: Principal, response_id: str) -> dict[str, Any]:
        return translate.public(await self._reconciled(await self._store.load_owned(principal, response_id)))

    async def events(
        self, principal: Principal, response_id: str, starting_after: int | None
    ) -> AsyncIterator[Event]:
        """A background response's events after `starting_after`, then new ones as they come."""
        record = await self._store.load_owned(principal, response_id)
        if not record.background:
            raise InvalidRequestError(
                "Only responses created with background=true can be streamed again.", param="stream"
            )
        return self._follow(record, starting_after)

    async def _follow(self, record: ResponseRecord, starting_after: int | None) -> AsyncIterator[Event]:
        assert record.job_id is not None
        last = -1 if starting_after is None else starting_after
        # Job events are numbered from 1: event n is the stream's sequence number n - 1.
        async for _, kind, data in self._jobs().follow(record.job_id, last + 1):
            if not isinstance(data, dict) or "sequence_number" not in data:
                continue  # the job's own events (job.started, job.completed, ...)
            last = data["sequence_number"]
            yield data
            if kind in TERMINAL:
                return
        current = await self._reconciled((await self._store.load(record.id)) or record)
        if current.status in ENDED:  # ended with no closing event of its own: cancelled, or failed
            for event in ResponseEvents(translate.snapshot(current), sequence=last + 1).closing(
                translate.public(current)
            ):
                yield event

    async def cancel(self, principal: Principal, response_id: str) -> dict[str, Any]:
        record = await self._reconciled(await self._store.load_owned(principal, response_id))
        if not record.background or record.job_id is None:
            raise InvalidRequestError(
                "Only responses created with background=true can be cancelled.", param="response_id"
            )

        def cancel(current: ResponseRecord) -> bool:
            if current.status in ENDED:
                return False
            current.status = "cancelled"
            return True

        updated = await self._store.update(record.id, cancel)
        if updated.status != "cancelled":
            raise InvalidRequestError(
                f"Cannot cancel a response with status '{updated.status}'.", param="response_id"
            )
        await self._jobs().stop(record.job_id)
        return translate.public(updated)

    async def delete(self, principal: Principal, response_id: str) -> dict[str, Any]:
        record = await self._store.load_owned(principal, response_id)
        if record.job_id and record.status not in ENDED:
            await self._jobs().stop(record.job_id)
        await self._store.delete(record)
        return {"id": record.id, "object": "response", "deleted": True}

    async def input_items(
        self,
        principal: Principal,
        response_id: str,
        *,
        limit: int,
        after: str | None,
        order: Literal["asc", "desc"],
    ) -> dict[str, Any]:
        """The items the response was made from: the conversation before it, then its own input;
        newest first unless `order` is `asc`."""
        record = await self._store.load_owned(principal, response_id)
        items = await self._store.history(principal, record.chain) + await self._store.input_items(record)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:
                raise InvalidRequestError(f"No input item with id '{after}' in this response.", param="after")
            items = items[ids.index(after) + 1 :]
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }

    # --- a background response whose job ended without saying so ------------------------------------

    async def _reconciled(self, record: ResponseRecord) -> ResponseRecord:
        """`record`, brought to its job's end if the job ended without ending the response (it was
        cancelled through /v1/jobs, its key was revoked, it failed, ran out of time or budget)."""
        if not record.background or record.status in ENDED or record.job_id is None:
            return record
        job = await self._jobs().run_status(record.job_id)
        if job is None or job.status not in ("completed", "failed", "cancelled", "incomplete"):
            return record
        status, error = _outcome(job)

        def end(current: ResponseRecord) -> bool:
            if current.status in ENDED:
                return False
            current.status, current.error = status, error  # type: ignore[assignment]
            return True

        return await self._store.update(record.id, end)


def _outcome(job: Any) -> tuple[str, dict[str, str] | None]:
    """How a response ended whose job ended without saving its answer."""
    if job.status == "cancelled":
        return "cancelled", None
    if job.status == "failed" and job.error:
        return "failed", translate.response_error(job.error.get("code"), str(job.error.get("message") or ""))
    reason = (job.incomplete_details or {}).get("reason")
    return "failed", translate.response_error(
        "server_error", _STOPPED.get(str(reason), "The background response ended without an answer.")
    )
