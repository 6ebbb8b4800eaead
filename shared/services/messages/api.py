"""MessagesService: Anthropic's Messages API for every model in the model file.

A model none of whose deployments is Anthropic's: the request is translated to a chat completion
(translate.py) and served by ChatService, so it is checked, routed (retries, fallbacks), limited by
the key, metered (span, usage record under the `messages` endpoint, cost) and cached exactly as a
chat completion is; the answer, or its stream, is translated back.

A model with an Anthropic deployment: the request goes through the router's Messages entry point,
which sends it as it is to an Anthropic deployment, or its chat translation to any other (a
fallback, or a mixed model name), and says which; the same checks, key limits and metering apply
here, with `calls.py`'s pieces (the chat cache does not: its entries are chat completions).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from shared.clients.protocols import ServedBy
from shared.errors import InvalidRequestError
from shared.models.messages import CountTokensCreate, MessageCreate
from shared.models.requests import ChatCompletionCreate
from shared.models.validation import validate_body
from shared.services.cache import CacheStatus
from shared.services.calls import CallContext, Meter, Metering, check_model, metered, primed
from shared.services.chat import ChatService
from shared.services.messages.stream import ChatToEvents, message_events
from shared.services.messages.translate import chat_messages, from_chat, output_cap, to_chat
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
    def __init__(
        self, chat: ChatService, metering: Metering, catalog: ModelCatalog, *, max_messages: int
    ) -> None:
        self._chat = chat
        self._metering = metering
        self._llm = metering.llm
        self._catalog = catalog
        self._max_messages = max_messages

    async def create(
        self, request: MessageCreate, call: CallContext, *, beta: str | None = None
    ) -> MessageOutcome:
        """A complete Message; `beta` is the client's `anthropic-beta`, for Anthropic deployments."""
        if not self._llm.serves_messages(request.model):
            outcome = await self._chat.create(self._chat_request(request), _as_messages(call))
            message = from_chat(outcome.completion, stop_sequences=request.stop_sequences)
            return MessageOutcome(message, outcome.served_by, outcome.cache)
        body = request.body()
        meter = await self._start(request, body, call)
        result = await meter.call(self._llm.messages(body, lambda: self._chat_params(request), beta=beta))
        meter.record_output(result.body.get("content" if result.wire == "anthropic" else "choices"))
        meter.finish(
            served_by=result.served_by,
            input_tokens=int(result.usage.get("prompt_tokens") or 0),
            output_tokens=int(result.usage.get("completion_tokens") or 0),
            usage_estimated=result.usage_estimated,
            finish_reasons=result.finish_reasons,
        )
        if result.wire == "anthropic":
            return MessageOutcome(result.body, result.served_by)
        return MessageOutcome(from_chat(result.body, stop_sequences=request.stop_sequences), result.served_by)

    async def open_stream(
        self, request: MessageCreate, call: CallContext, *, beta: str | None = None
    ) -> MessageStream:
        """Start a stream of Anthropic's events; early failures keep their HTTP status."""
        if not self._llm.serves_messages(request.model):
            chat = await self._chat.open_stream(self._chat_request(request), _as_messages(call))
            events = message_events(chat.chunks, self._translation(request, chat.served_by.model))
            return MessageStream(chat.served_by, events, chat.cache)
        body = request.body()
        meter = await self._start(request, body, call)
        stream = await meter.call(
            self._llm.messages_stream(body, lambda: self._chat_params(request), beta=beta)
        )
        # From here the relay owns the meter and the upstream stream, and closes both.
        relayed = metered(stream, meter)
        if stream.wire == "anthropic":
            return MessageStream(stream.served_by, await primed(relayed))
        translation = self._translation(request, stream.served_by.model)
        return MessageStream(stream.served_by, await primed(message_events(relayed, translation)))

    def count_tokens(self, request: CountTokensCreate, call: CallContext) -> dict[str, int]:
        """`{"input_tokens": N}`: the prompt and tool definitions counted with tiktoken, as
        OpenAI's models count them (an estimate for every other model)."""
        check_model(self._catalog, self._llm, call.principal, request.model)
        tokens = self._llm.count_tokens(request.model, chat_messages(request))
        if request.tools:
            definitions = [tool.model_dump(mode="json", exclude_none=True) for tool in request.tools]
            tokens += self._llm.count_tokens(request.model, orjson.dumps(definitions).decode())
        return {"input_tokens": tokens}

    # --- the translated request -----------------------------------------------------------------

    def _chat_request(self, request: MessageCreate) -> ChatCompletionCreate:
        limits = self._llm.limits(request.model)  # an unknown model: no limits, then a 404
        params = to_chat(request, reasoning=limits.reasoning)
        # Anthropic clients size max_tokens for Claude (Claude Code asks for 32000): a model that
        # writes less gets its own limit rather than a refusal.
        cap = output_cap(limits.reasoning)
        if limits.max_output_tokens and params[cap] > limits.max_output_tokens:
            params[cap] = limits.max_output_tokens
        return validate_body(ChatCompletionCreate, params)

    def _chat_params(self, request: MessageCreate) -> dict[str, Any]:
        return self._chat_request(request).upstream_params()

    def _translation(self, request: MessageCreate, model: str) -> ChatToEvents:
        return ChatToEvents(
            model,
            stop_sequences=request.stop_sequences,
            count_output=lambda text: self._llm.count_tokens(model, text),
        )

    # --- the native request -------------------------------------------------------------------

    async def _start(self, request: MessageCreate, body: dict[str, Any], call: CallContext) -> Meter:
        """The chat service's checks, then the key's limits and the call's meter."""
        if len(request.messages) > self._max_messages:
            raise InvalidRequestError(
                f"Too many messages: {len(request.messages)}; at most {self._max_messages} per request.",
                param="messages",
            )
        check_model(self._catalog, self._llm, call.principal, request.model, tools=bool(request.tools))

        def estimate() -> tuple[int, int]:
            return self._llm.count_tokens(request.model, chat_messages(request)), request.max_tokens

        return await self._metering.start(
            "messages",
            request.model,
            call,
            estimate=estimate,
            content=body["messages"],
            stream=bool(request.stream),
            attributes={
                "gen_ai.request.max_tokens": request.max_tokens,
                "gen_ai.request.temperature": request.temperature,
                "gen_ai.request.top_p": request.top_p,
                "gen_ai.request.top_k": request.top_k,
            },
        )


def _as_messages(call: CallContext) -> CallContext:
    """The call, recorded under Anthropic's surface when the chat service serves it."""
    return dataclasses.replace(call, endpoint="messages")
