"""One model call, metered: a GenAI span, GenAI metrics and a usage record written afterwards."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from shared import observability, telemetry
from shared.clients.protocols import (
    LLMRouter,
    ModelResult,
    ModelStream,
    ServedBy,
    UnitUsage,
    allowed_models,
)
from shared.errors import CirrusError, InvalidRequestError, PermissionDeniedError, UpstreamError
from shared.models.usage import Endpoint, UsageRecord
from shared.services.auth import Principal
from shared.services.background import Background
from shared.services.limits import Admission, KeyLimiter
from shared.services.model_catalog import ModelCatalog
from shared.services.usage import UsageService, day_of

CANCELLED = "cancelled"  # the client went away first
DEFAULT_OUTPUT_CAP = 4096  # for the budget hold when neither request nor model caps the output
MAX_TRACED_CHARS = 32_000  # opt-in content on spans is cut here: exporters cap attribute sizes
# The most tokens a call can read and write, for the budget hold: (input, output).
Estimate = Callable[[], tuple[int, int]]
# The GenAI operation name of each endpoint (the surfaces beyond chat use LiteLLM's mode names).
OPERATIONS: dict[Endpoint, str] = {
    "chat.completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "messages": "chat",  # Anthropic's Messages are chats too
    "responses": "chat",  # so are OpenAI's Responses
    "moderations": "moderation",
    "images.generations": "image_generation",
    "audio.transcriptions": "audio_transcription",
    "audio.speech": "audio_speech",
    "rerank": "rerank",
}


@dataclass(frozen=True)
class CallContext:
    """Who asked, and how: what a service needs from the transport besides the body."""

    request_id: str
    principal: Principal
    session_id: str | None = None
    # The surface the client called: a Responses request runs as chat, metered as `responses`.
    endpoint: Endpoint = "chat.completions"
    cache_control: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # Headers for the response, whatever its outcome: the key's `x-ratelimit-*` figures.
    response_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Metering:
    """The collaborators every metered call shares."""

    llm: LLMRouter
    usage: UsageService
    background: Background
    limiter: KeyLimiter
    trace_content: bool = False  # record prompts and completions on spans (CIRRUS_TRACE_CONTENT)

    async def start(
        self,
        endpoint: Endpoint,
        model: str,
        call: CallContext,
        *,
        stream: bool,
        attributes: dict[str, Any],
        estimate: Estimate | None = None,
        max_cost: Callable[[], float | None] | None = None,
        content: Any = None,
    ) -> Meter:
        """Admit the call against the key's limits (or raise 429), then open its meter.

        The budget hold is `max_cost()` when given (endpoints priced per image, second, ...), else
        the price of the tokens `estimate()` gives. `content` (the messages, prompt or input) goes
        on the span only with CIRRUS_TRACE_CONTENT."""

        def token_cost() -> float | None:
            if estimate is None:
                return None
            input_tokens, output_tokens = estimate()
            return self.llm.max_cost_usd(model, input_tokens, output_tokens)

        # For this request's routing and its hold: fallbacks only to the models the key may use.
        principal = call.principal
        allowed_models.set(None if principal.is_master else principal.models)
        admission = await self.limiter.admit(call.principal, max_cost or token_cost)
        if admission is not None:
            call.response_headers.update(admission.headers)
        meter = Meter(self, endpoint, model, call, stream=stream, attributes=attributes, admission=admission)
        if self.trace_content and content is not None:
            meter.span.set_attribute("gen_ai.input.messages", _traced(content))
        return meter


class Meter:
    """Open at the start of a call; `finish` exactly once, with what happened."""

    def __init__(
        self,
        metering: Metering,
        endpoint: Endpoint,
        model: str,
        call: CallContext,
        *,
        stream: bool,
        attributes: dict[str, Any],
        admission: Admission | None = None,
    ) -> None:
        self._metering = metering
        self._admission = admission
        self._endpoint = endpoint
        self._model = model
        self._call = call
        self._stream = stream
        self._created = time.time()
        self._started = time.perf_counter()
        self._ttft: float | None = None
        self._finished = False
        operation = OPERATIONS[endpoint]
        self._operation = operation
        self._totals = observability.model_call_totals()  # the request's or message's, summed there
        # INTERNAL: the call to Cirrus's router, in this process. The calls that leave it are the
        # provider attempts beneath (CLIENT, in clients/llm/spans.py): Application Insights draws
        # those on its application map, and would draw this one as a node of its own with no target.
        self.span = telemetry.tracer.start_span(
            f"{operation} {model}",
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.request.model": model,
                "cirrus.stream": stream,
                "cirrus.key_id": call.principal.key_id,
                "cirrus.request_id": call.request_id,
                **({"cirrus.session": call.session_id} if call.session_id else {}),
                **{f"cirrus.{name}": value for name, value in call.tags.items()},  # job_id, batch_id
                **{k: v for k, v in attributes.items() if v is not None},
            },
        )

    async def call[T](self, awaitable: Awaitable[T], **finish: Any) -> T:
        """Await the provider call inside this span; a failure finishes the meter and re-raises."""
        try:
            with trace.use_span(self.span, end_on_exit=False):
                return await awaitable
        except BaseException as exc:
            self.finish(error=exc, **finish)
            raise

    def record_output(self, output: Any) -> None:
        """The answer, on the span, only with CIRRUS_TRACE_CONTENT (off: never recorded)."""
        if self._metering.trace_content and not self._finished:
            self.span.set_attribute("gen_ai.output.messages", _traced(output))

    def finish_with(self, result: ModelResult, **finish: Any) -> None:
        """Finish with a complete (non-streamed) chat or text completion."""
        self.record_output(result.body.get("choices"))
        usage = result.usage
        self.finish(
            served_by=result.served_by,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            usage_estimated=result.usage_estimated,
            finish_reasons=result.finish_reasons,
            **finish,
        )

    def first_token(self) -> None:
        if self._ttft is None:
            self._ttft = time.perf_counter() - self._started
            self.span.set_attribute("cirrus.time_to_first_token_s", self._ttft)
            telemetry.time_to_first_token.record(
                self._ttft, {"gen_ai.operation.name": self._operation, "gen_ai.request.model": self._model}
            )

    def finish(
        self,
        *,
        served_by: ServedBy | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        usage_estimated: bool = False,
        finish_reasons: Sequence[str] = (),
        error: BaseException | None = None,
        cache_hit: bool = False,
        session_id: str | None = None,
        units: UnitUsage | None = None,
    ) -> UsageRecord | None:
        """End the span, record metrics and write the usage record in the background.

        `units` is the usage of an endpoint priced in its own unit (images, seconds, ...): it
        carries the call's tokens too, and prices the call instead of its tokens."""
        if self._finished:
            return None
        self._finished = True
        latency = time.perf_counter() - self._started
        status, http_status = _outcome(error)
        if units is not None:
            input_tokens, output_tokens = units.input_tokens, units.output_tokens
            usage_estimated = usage_estimated or units.estimated
        cost = 0.0 if cache_hit else None
        if served_by is not None and not cache_hit:
            cost = (
                self._metering.llm.unit_cost_usd(served_by, units)
                if units is not None
                else self._metering.llm.cost_usd(served_by, input_tokens, output_tokens)
            )
        record = UsageRecord(
            id=f"usage_{uuid.uuid4().hex}",
            pk=self._call.principal.key_id,
            request_id=self._call.request_id,
            created_at=self._created,
            day=day_of(self._created),
            key_id=self._call.principal.key_id,
            team_id=self._call.principal.team_id,
            endpoint=self._endpoint,
            model=self._model,
            served_model=served_by.model if served_by else None,
            deployment=served_by.deployment if served_by else None,
            provider=served_by.provider if served_by else None,
            session_id=session_id or self._call.session_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
            usage_estimated=usage_estimated,
            units=units.units if units is not None else None,
            unit=units.unit if units is not None else None,
            cost_usd=cost,
            latency_ms=round(latency * 1000, 3),
            ttft_ms=round(self._ttft * 1000, 3) if self._ttft is not None else None,
            status=status,
            http_status=http_status,
            stream=self._stream,
            cache_hit=cache_hit,
            fallback=bool(served_by and served_by.fallbacks),
            tags=self._call.tags,
        )
        self._trace(record, served_by, finish_reasons, error, latency)
        if self._totals is not None:
            self._totals.add(
                self._model,
                deployment=record.deployment,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=cost,
            )
        self._metering.usage.submit(record)
        # In the background, yet before this worker's next request of the key: the limiter
        # applies one key's changes in the order they arrive (see KeyLimiter._submit).
        if self._admission is not None and self._admission.needs_settling:
            self._metering.background.spawn(
                self._metering.limiter.settle(
                    self._call.principal, self._admission, cost, 0 if cache_hit else record.total_tokens
                ),
                name="limits-settle",
            )
        return record

    def _trace(
        self,
        record: UsageRecord,
        served_by: ServedBy | None,
        finish_reasons: Sequence[str],
        error: BaseException | None,
        latency: float,
    ) -> None:
        span = self.span
        if error is not None:
            telemetry.record_error(span, error)
        attributes = {
            "gen_ai.operation.name": self._operation,
            "gen_ai.request.model": self._model,
            "gen_ai.provider.name": served_by.provider if served_by else None,
            "gen_ai.response.model": served_by.upstream_model if served_by else None,
        }
        telemetry.set_attributes(
            span,
            {
                **attributes,
                "gen_ai.usage.input_tokens": record.input_tokens if served_by or record.cache_hit else None,
                "gen_ai.usage.output_tokens": record.output_tokens if served_by or record.cache_hit else None,
                "gen_ai.response.finish_reasons": [str(r) for r in finish_reasons if r] or None,
                "cirrus.deployment": record.deployment,
                "cirrus.served_model": record.served_model,
                "cirrus.fallback": record.fallback,
                "cirrus.cache_hit": record.cache_hit,
                "cirrus.cost_usd": record.cost_usd,
                "cirrus.usage.units": record.units,
                "cirrus.usage.unit": record.unit,
                "cirrus.usage_estimated": record.usage_estimated or None,
            },
        )
        metric_attributes = {k: v for k, v in attributes.items() if v is not None}
        if error is not None:
            metric_attributes["error.type"] = record.status
        telemetry.operation_duration.record(latency, metric_attributes)
        if served_by is not None:
            telemetry.token_usage.record(
                record.input_tokens, {**metric_attributes, "gen_ai.token.type": "input"}
            )
            telemetry.token_usage.record(
                record.output_tokens, {**metric_attributes, "gen_ai.token.type": "output"}
            )
        span.end()


def _traced(content: Any) -> str:
    return orjson.dumps(content, default=str).decode()[:MAX_TRACED_CHARS]


def _outcome(error: BaseException | None) -> tuple[str, int]:
    if error is None:
        return "ok", 200
    if isinstance(error, GeneratorExit | asyncio.CancelledError):
        return CANCELLED, 499
    if isinstance(error, CirrusError):
        return error.code or error.type, error.status
    return "server_error", 500


def check_model(
    catalog: ModelCatalog,
    llm: LLMRouter,
    principal: Principal,
    model: str,
    *,
    output_cap: int | None = None,
    cap_param: str = "max_tokens",
    path: str | None = None,
    tools: bool = False,
) -> None:
    """404 for a model not served, 403 for one the key may not use; 400 for an output cap over
    the model's limit, for a model none of whose deployments serves `path` (`rerank`, ...), or for
    `tools` on a model known not to call them (the model file's or the price map's
    `supports_function_calling: false`; unknown is let through, for the provider to decide)."""
    catalog.require(model)
    if not principal.may_use(model):
        raise PermissionDeniedError(
            f"This API key is not allowed to use the model `{model}`.",
            param="model",
            code="model_not_allowed",
        )
    if path is not None and not llm.serves(model, path):
        raise InvalidRequestError(
            f"The model `{model}` does not support /v1/{path}.", param="model", code="model_not_supported"
        )
    if tools and llm.features(model).function_calling is False:
        raise InvalidRequestError(
            f"The model `{model}` does not support tools (its model file entry or LiteLLM's price map "
            "says so; set `model_info.supports_function_calling: true` if it does).",
            param="tools",
            code="model_not_supported",
        )
    if output_cap is None:
        return
    limit = llm.limits(model).max_output_tokens
    if limit and output_cap > limit:
        raise InvalidRequestError(
            f"{cap_param} is too large: {output_cap}. This model supports at most {limit} completion tokens.",
            param=cap_param,
        )


async def primed[T](chunks: AsyncIterator[T]) -> AsyncIterator[T]:
    """Wait for the first chunk, so a failure before it raises here with its own HTTP status."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        raise UpstreamError("The model provider returned an empty stream.") from None
    return _prepend(first, chunks)


async def _prepend[T](first: T, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]  # an async generator


async def metered(stream: ModelStream, meter: Meter) -> AsyncIterator[dict[str, Any]]:
    """The router's stream relayed as it is; the meter notes the first token, and however the
    stream ends (done, failed, the client gone) it is closed and the meter finished."""
    upstream = aiter(stream)
    error: BaseException | None = None
    first = True
    try:
        async for item in upstream:
            if first:
                meter.first_token()
                first = False
            yield item
    except BaseException as exc:
        error = exc
        raise
    finally:
        await close_stream(stream, upstream, meter, error)


async def close_stream(
    stream: ModelStream,
    upstream: AsyncIterator[Any],
    meter: Meter,
    error: BaseException | None,
    **extra: Any,
) -> None:
    """Close an upstream stream and finish its meter with whatever usage it reached."""
    await upstream.aclose()  # type: ignore[attr-defined]  # settles the stream's usage
    await stream.aclose()
    usage = stream.usage or {}
    meter.finish(
        served_by=stream.served_by,
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        usage_estimated=stream.usage_estimated,
        finish_reasons=stream.finish_reasons,
        error=error,
        **extra,
    )
