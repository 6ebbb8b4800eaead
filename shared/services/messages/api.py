"""MessagesService: Anthropic's Messages API over Cirrus's chat service.

Every request is translated to a chat completion (translate.py) and served by ChatService, so a
Message is checked, routed (retries, fallbacks), limited by the key, metered (span, usage record
under the `messages` endpoint, cost) and cached exactly as a chat completion is; the answer, or its
stream, is translated back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from shared.clients.protocols import LLMRouter, ServedBy
from shared.models.messages import CountTokensCreate, MessageCreate
from shared.models.requests import ChatCompletionCreate
from shared.models.validation import validate_body
from shared.services.cache import CacheStatus
from shared.services.calls import CallContext, check_model
from shared.services.chat import ChatService
from shared.services.messages.stream import ChatToEvents, message_events
from shared.services.messages.translate import chat_messages, from_chat, to_chat
from shared.services.model_catalog import ModelCatalog


@dataclass
class MessageOutcome:
    message: dict[str, Any]  # Anthropic's Message
    served_by: ServedBy
    cache: CacheStatus = CacheStatus.OFF


@dataclass
class MessageStream:
    """A stream whose first event is ready: failures before it were raised as ordinary errors."""

    served_by: ServedBy
    events: AsyncIterator[dict[str, Any]]
    cache: CacheStatus = CacheStatus.OFF


class MessagesService:
    def __init__(self, chat: ChatService, llm: LLMRouter, catalog: ModelCatalog) -> None:
        self._chat = chat
        self._llm = llm
        self._catalog = catalog

    async def create(self, request: MessageCreate, call: CallContext) -> MessageOutcome:
        """A complete Message."""
        outcome = await self._chat.create(self._chat_request(request), call, endpoint="messages")
        message = from_chat(outcome.completion, stop_sequences=request.stop_sequences)
        return MessageOutcome(message, outcome.served_by, outcome.cache)

    async def open_stream(self, request: MessageCreate, call: CallContext) -> MessageStream:
        """Start a stream of Anthropic's events; early failures keep their HTTP status."""
        stream = await self._chat.open_stream(self._chat_request(request), call, endpoint="messages")
        model = stream.served_by.model
        translation = ChatToEvents(
            model,
            stop_sequences=request.stop_sequences,
            count_output=lambda text: self._llm.count_tokens(model, text),
        )
        return MessageStream(stream.served_by, message_events(stream.chunks, translation), stream.cache)

    def count_tokens(self, request: CountTokensCreate, call: CallContext) -> dict[str, int]:
        """`{"input_tokens": N}`: the prompt and tool definitions counted with tiktoken, as
        OpenAI's models count them (an estimate for every other model)."""
        check_model(self._catalog, self._llm, call.principal, request.model)
        tokens = self._llm.count_tokens(request.model, chat_messages(request))
        if request.tools:
            definitions = [tool.model_dump(mode="json", exclude_none=True) for tool in request.tools]
            tokens += self._llm.count_tokens(request.model, orjson.dumps(definitions).decode())
        return {"input_tokens": tokens}

    def _chat_request(self, request: MessageCreate) -> ChatCompletionCreate:
        reasoning = self._llm.limits(request.model).reasoning  # unknown model: False, then a 404
        return validate_body(ChatCompletionCreate, to_chat(request, reasoning=reasoning))
