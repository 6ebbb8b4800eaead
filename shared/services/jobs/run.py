"""What every step of a run shares: whether to stop, the model call, checkpoints and events."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from shared.errors import AuthenticationError
from shared.models.jobs import JobCreate, JobRecord, ResponseJobSpec
from shared.models.requests import ChatCompletionCreate
from shared.models.usage import Endpoint
from shared.services.auth import Principal
from shared.services.calls import CallContext
from shared.services.jobs.store import JobStore
from shared.services.owners import Lookup as OwnerLookup
from shared.services.provider_retries import with_provider_retries

# Runs one chat request as live traffic would: the completion and its cost in USD (None: unknown).
Completion = dict[str, Any]  # OpenAI's chat.completion JSON
ChatCall = Callable[[ChatCompletionCreate, CallContext], Awaitable[tuple[Completion, float | None]]]


class Stop(Exception):
    """A signal, not an error: the run ends here with this status."""

    def __init__(self, status: str, reason: str | None = None, error: dict[str, Any] | None = None) -> None:
        super().__init__(status)
        self.status, self.reason, self.error = status, reason, error


class KeyUnreadable(Exception):
    """The job's key could not be read (its store unreachable or throttled): no answer about the
    key at all. Not a CirrusError, so no step turns it into a failed job: the message fails, the
    queue redelivers it, and the job resumes from its checkpoint."""


async def read_owner(owner: OwnerLookup, key_id: str) -> Principal:
    """The key's principal now. AuthenticationError (gone, revoked, expired) is final and fails the
    job; any other failure to read it raises KeyUnreadable, which only retries the message."""
    try:
        return await owner(key_id)
    except AuthenticationError:
        raise
    except Exception as exc:
        raise KeyUnreadable(f"The key {key_id} could not be read ({type(exc).__name__}).") from exc


class Run:
    """One run of one job by this worker: the job's item as the run has it (its checkpoint, saved
    as it goes), its spec, and what each step may do."""

    def __init__(
        self,
        job: JobRecord,
        spec: JobCreate | ResponseJobSpec,
        store: JobStore,
        chat: ChatCall,
        owner: OwnerLookup,
        *,
        lease_seconds: float,
    ) -> None:
        self.job = job
        self.spec = spec
        self._store = store
        self._chat = chat
        self._owner = owner
        self._lease = lease_seconds

    async def principal(self) -> Principal:
        """Who the job runs as, now: read again at every step (the owner lookup caches it for a
        few seconds), so a revoked key or one with fewer models or less budget stops running work.
        AuthenticationError if the key is gone; KeyUnreadable if it cannot be read right now."""
        return await read_owner(self._owner, self.job.owner)

    async def event(self, kind: str, data: dict[str, Any]) -> None:
        await self._store.event(self.job, kind, data)

    async def check_stop(self) -> None:
        """Stop (raises Stop) if the job was cancelled, ran out of time or spent its budget."""
        job, spec = self.job, self.spec
        current = await self._store.load(job.id)
        if current is not None and current.status == "cancelling":
            raise Stop("cancelled")
        if job.started_at and time.time() - job.started_at > spec.timeout_s:
            raise Stop("incomplete", "timeout")
        if spec.max_cost_usd is not None and job.usage["cost_usd"] >= spec.max_cost_usd:
            raise Stop("incomplete", "max_cost")

    async def ask(
        self,
        request: ChatCompletionCreate,
        *,
        endpoint: Endpoint = "chat.completions",
        tags: dict[str, str] | None = None,
    ) -> tuple[Completion, float | None]:
        """One model call as the job's key, with queued work's retry policy (provider_retries):
        a rate limit waits its Retry-After, a provider fault gets three tries, and every wait ends
        with a check for a cancel, the timeout or the budget (which raises Stop). `endpoint` and
        `tags` go on the call's usage record (a background response's are `responses` and its id)."""

        async def attempt() -> tuple[Completion, float | None]:
            principal = await self.principal()  # as the key is now, at every attempt
            call = CallContext(
                request_id=f"req_{uuid.uuid4().hex}",
                principal=principal,
                endpoint=endpoint,
                tags={"job_id": self.job.id, **(tags or {})},
            )
            return await self._chat(request, call)

        async def wait(seconds: float) -> bool:
            await asyncio.sleep(seconds)
            await self.check_stop()
            return True

        return await with_provider_retries(attempt, wait)

    def add_usage(self, completion: Completion, cost: float | None) -> None:
        usage = completion.get("usage") or {}
        totals = self.job.usage
        totals["input_tokens"] += int(usage.get("prompt_tokens") or 0)
        totals["output_tokens"] += int(usage.get("completion_tokens") or 0)
        totals["cost_usd"] = round(totals["cost_usd"] + (cost or 0.0), 10)

    async def checkpoint(self) -> None:
        """Save the run's progress (only while this worker holds the lease)."""
        job = self.job
        values = progress(job)

        def save(current: JobRecord) -> bool:
            if current.worker != job.worker:
                raise Stop("lost", error=None)
            for name, value in values.items():
                setattr(current, name, value)
            current.lease_until = time.time() + self._lease
            return True

        await self._store.update(job.id, save)


def progress(job: JobRecord) -> dict[str, Any]:
    """What a run changes on its job as it goes: saved at each checkpoint and at the end."""
    return {name: getattr(job, name) for name in ("messages", "calls", "step", "steps", "usage", "event_seq")}


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
