"""Chat completions: validate against the catalog, call the router, trace the call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from openai.types.chat import ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from shared import telemetry
from shared.clients.protocols import ChatResult, ChatStream, LLMRouter, ServedBy
from shared.errors import UpstreamError
from shared.models.chat import ChatCompletionCreate
from shared.services.model_catalog import ModelCatalog


@dataclass
class OpenStream:
    """A stream whose first chunk has arrived: failures before it were raised as ordinary errors."""

    served_by: ServedBy
    chunks: AsyncIterator[ChatCompletionChunk]


class ChatService:
    def __init__(self, llm: LLMRouter, catalog: ModelCatalog) -> None:
        self._llm = llm
        self._catalog = catalog

    async def create(self, request: ChatCompletionCreate) -> ChatResult:
        """A complete (non-streaming) chat completion."""
        self._catalog.require(request.model)
        with telemetry.tracer.start_as_current_span(
            f"chat {request.model}", kind=SpanKind.CLIENT, attributes=_request_attributes(request)
        ) as span:
            started = time.perf_counter()
            try:
                result = await self._llm.chat(request.upstream_params())
            except Exception as exc:
                telemetry.record_error(span, exc)
                raise
            choices = result.completion.choices
            _record_response(
                span, result.served_by, result.completion.usage, [c.finish_reason for c in choices], started
            )
            return result

    async def open_stream(self, request: ChatCompletionCreate) -> OpenStream:
        """Start a stream and wait for its first chunk, so early failures keep their HTTP status."""
        self._catalog.require(request.model)
        span = telemetry.tracer.start_span(
            f"chat {request.model}", kind=SpanKind.CLIENT, attributes=_request_attributes(request)
        )
        started = time.perf_counter()
        try:
            with trace.use_span(span, end_on_exit=False):
                stream = await self._llm.chat_stream(request.upstream_params())
        except BaseException as exc:
            telemetry.record_error(span, exc)
            span.end()
            raise
        # From here the relay owns the span and the upstream stream, and closes both.
        chunks = _relay(stream, span, started)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            raise UpstreamError("The model provider returned an empty stream.") from None
        return OpenStream(served_by=stream.served_by, chunks=_prepend(first, chunks))


async def _relay(stream: ChatStream, span: Span, started: float) -> AsyncIterator[ChatCompletionChunk]:
    try:
        first = True
        async for chunk in stream:
            if first:
                span.set_attribute("cirrus.time_to_first_token_s", time.perf_counter() - started)
                first = False
            yield chunk
        _record_response(span, stream.served_by, stream.usage, stream.finish_reasons, started)
    except BaseException as exc:
        telemetry.record_error(span, exc)
        if stream.usage is not None:  # a stream cut after its usage chunk still used tokens
            _record_usage(span, stream.served_by, stream.usage)
        raise
    finally:
        await stream.aclose()
        span.end()


async def _prepend(
    first: ChatCompletionChunk, rest: AsyncIterator[ChatCompletionChunk]
) -> AsyncIterator[ChatCompletionChunk]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]  # an async generator


def _request_attributes(request: ChatCompletionCreate) -> dict[str, Any]:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": request.model,
        "gen_ai.request.max_tokens": request.max_completion_tokens or request.max_tokens,
        "gen_ai.request.temperature": request.temperature,
        "gen_ai.request.top_p": request.top_p,
        "gen_ai.request.seed": request.seed,
        "gen_ai.request.choice.count": request.n,
        "cirrus.stream": bool(request.stream),
    }
    return {k: v for k, v in attributes.items() if v is not None}  # OpenTelemetry rejects None


def _record_response(
    span: Span,
    served_by: ServedBy,
    usage: CompletionUsage | None,
    finish_reasons: list[str] | Any,
    started: float,
) -> None:
    duration = time.perf_counter() - started
    telemetry.set_attributes(
        span,
        {
            "gen_ai.response.model": served_by.upstream_model,
            "gen_ai.response.finish_reasons": [str(r) for r in finish_reasons if r],
        },
    )
    telemetry.operation_duration.record(duration, _metric_attributes(served_by))
    if usage is not None:
        _record_usage(span, served_by, usage)


def _record_usage(span: Span, served_by: ServedBy, usage: CompletionUsage) -> None:
    telemetry.set_attributes(
        span,
        {
            "gen_ai.provider.name": served_by.provider,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "cirrus.deployment": served_by.deployment,
        },
    )
    attributes = _metric_attributes(served_by)
    telemetry.token_usage.record(usage.prompt_tokens, {**attributes, "gen_ai.token.type": "input"})
    telemetry.token_usage.record(usage.completion_tokens, {**attributes, "gen_ai.token.type": "output"})


def _metric_attributes(served_by: ServedBy) -> dict[str, str]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": served_by.provider,
        "gen_ai.request.model": served_by.model,
        "gen_ai.response.model": served_by.upstream_model,
    }
