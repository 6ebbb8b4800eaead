"""What a background response's job step (jobs/response_step.py) needs from the Responses API.

The stored response is the run's checkpoint: `queued` until a worker begins it, `in_progress`
while the model call runs, then its output, usage and status are saved in one ETag-guarded write
that loses to a cancel. The events are numbered the same way on every run, so a run that resumes
after its worker died writes the same events again, over the ones it finds:

    1 response.created, 2 response.queued      written when the response is created
    3 response.in_progress                      when a worker begins it
    4 ... the output's events, then response.completed or response.incomplete

(event n is sequence number n - 1).
"""

from __future__ import annotations

import time
from typing import Any

from shared.models.requests import ChatCompletionCreate
from shared.models.responses import ENDED, ResponseRecord
from shared.services.auth import Principal
from shared.services.responses import translate
from shared.services.responses.conversation import Conversation, settings_of
from shared.services.responses.store import ResponseStore
from shared.services.responses.stream import ResponseEvents

IN_PROGRESS_AT = 2  # sequence number of response.in_progress
OUTPUT_AT = 3  # of the output's first event


class ResponseRunner:
    def __init__(self, store: ResponseStore, conversation: Conversation) -> None:
        self._store = store
        self._conversation = conversation

    async def load(self, response_id: str) -> ResponseRecord | None:
        return await self._store.load(response_id)

    async def begin(self, response_id: str) -> ResponseRecord:
        """Mark a queued response in progress (anything else is left as it is)."""

        def start(current: ResponseRecord) -> bool:
            if current.status != "queued":
                return False
            current.status = "in_progress"
            return True

        return await self._store.update(response_id, start)

    async def chat_request(self, record: ResponseRecord, principal: Principal) -> ChatCompletionCreate:
        """The response's chat request, its conversation read as the key sees it now."""
        request = settings_of(record)
        history = await self._store.history(principal, record.chain)
        return self._conversation.chat_request(request, history, await self._store.input_items(record))

    async def finish(self, response_id: str, completion: dict[str, Any]) -> ResponseRecord:
        """Save the answer, unless the response ended first (a cancel wins): the record as it is."""
        output, status, incomplete = translate.output_from_completion(completion)

        def save(current: ResponseRecord) -> bool:
            if current.status in ENDED:
                return False
            current.output, current.status, current.incomplete_details = output, status, incomplete
            current.usage = translate.response_usage(completion.get("usage"))
            current.model = str(completion.get("model") or current.model)
            current.completed_at = time.time()
            return True

        return await self._store.update(response_id, save)

    def in_progress_events(self, record: ResponseRecord) -> list[dict[str, Any]]:
        return ResponseEvents(translate.snapshot(record), sequence=IN_PROGRESS_AT).in_progress()

    def output_events(self, record: ResponseRecord) -> list[dict[str, Any]]:
        """The events of a response that has ended with an answer: its output, then its end."""
        return ResponseEvents(translate.snapshot(record), sequence=OUTPUT_AT).replay(translate.public(record))
