"""A background response (POST /v1/responses with `background: true`) as a job: one model call,
checkpointed in the stored response, resumable, cancellable.

The stored response is the checkpoint (responses/background.py): a run that finds its answer
saved only writes its closing events again; one that finds it in progress asks the model again
(the call's answer was not saved before the worker died). The call goes through the chat service
as the job's key is now, with queued work's retries, the key's limits and budget, and usage
recorded under endpoint `responses`. While it runs, the job is looked at every
`CANCEL_POLL_S`: a cancel (or the timeout) stops the call at once, not after it. `max_cost_usd`
(CIRRUS_RESPONSE_MAX_COST_USD) is checked before every call, as for agent runs: the spend of
calls repeated after a worker died never passes it by more than one call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, Protocol

from shared.models.requests import ChatCompletionCreate
from shared.models.responses import ResponseRecord
from shared.services.auth import Principal
from shared.services.jobs.run import Run, Stop

CANCEL_POLL_S = 1.0


class ResponseRunner(Protocol):
    """The Responses side of a background run (shared/services/responses/background.py)."""

    async def load(self, response_id: str) -> ResponseRecord | None: ...
    async def begin(self, response_id: str) -> ResponseRecord: ...
    async def chat_request(self, record: ResponseRecord, principal: Principal) -> ChatCompletionCreate: ...
    async def finish(self, response_id: str, completion: dict[str, Any]) -> ResponseRecord: ...
    def in_progress_events(self, record: ResponseRecord) -> list[dict[str, Any]]: ...
    def output_events(self, record: ResponseRecord) -> list[dict[str, Any]]: ...


async def run_response(run: Run, runner: ResponseRunner | None) -> Any:
    """Run the job's response to its end: the job's result; Stop when it was cancelled first."""
    if runner is None:
        raise Stop(
            "failed", error={"code": "server_error", "message": "Background responses are not available."}
        )
    response_id = str(run.job.spec["response_id"])
    record = await runner.load(response_id)
    if record is None or record.status == "cancelled":
        raise Stop("cancelled")  # deleted or cancelled while it waited
    if record.status in ("completed", "incomplete"):  # saved before a restart: only the events again
        await _write(run, runner.output_events(record))
        return _result(record)
    if record.status == "failed":
        return _result(record)
    record = await runner.begin(response_id)
    await _write(run, runner.in_progress_events(record))
    await run.check_stop()
    request = await runner.chat_request(record, await run.principal())
    completion, cost = await _watched(
        run, run.ask(request, endpoint="responses", tags={"response_id": response_id})
    )
    run.add_usage(completion, cost)
    run.job.step += 1
    run.job.steps.append({"step": run.job.step, "kind": "model"})
    saved = await runner.finish(response_id, completion)
    await run.checkpoint()
    if saved.status == "cancelled":
        raise Stop("cancelled")
    await _write(run, runner.output_events(saved))
    return _result(saved)


async def _watched[T](run: Run, call: Awaitable[T]) -> T:
    """`call`'s result; looks at the job every CANCEL_POLL_S meanwhile and stops the call (Stop)
    on a cancel or the timeout."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=CANCEL_POLL_S)
            if done:
                return task.result()
            await run.check_stop()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _write(run: Run, events: list[dict[str, Any]]) -> None:
    """Store events as the job's, event n being sequence number n - 1: written again on a resume,
    they land on themselves."""
    for event in events:
        run.job.event_seq = int(event["sequence_number"])
        await run.event(event["type"], event)


def _result(record: ResponseRecord) -> dict[str, Any]:
    return {"response_id": record.id, "status": record.status}
