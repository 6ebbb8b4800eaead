"""Traces and metrics around Cirrus's own edges: HTTP requests in, queue messages in and out.

- Every queue message Cirrus writes carries the W3C `traceparent` of the span that wrote it, so
  the function that processes it (and everything it fans out to) joins the trace of the HTTP
  request that started the work.
- Every HTTP request is a SERVER span (continuing the caller's `traceparent` if sent), named and
  described by OpenTelemetry's HTTP semantic conventions (`{method} {http.route}`, `url.*`,
  `server.*`, `user_agent.original`, `http.response.status_code`, `error.type` on a failure, so
  Application Insights' requests table shows routes), and feeds `http.server.request.duration`.
- Every queue message is a CONSUMER span and feeds `messaging.process.duration` and
  `cirrus.queue.message.age`; poisoned messages count in `cirrus.queue.poisoned`.
- Every timer invocation (the sweeper) is a SERVER span named after its function, so the storage
  calls it makes belong to a request instead of each starting a trace of its own.
- All of them carry the sum of the model calls made for them (`ModelCallTotals`): the models,
  deployments, tokens and cost, so Application Insights' requests table can be queried by them.

GenAI spans and metrics (one per model call) live in `shared/telemetry.py` and `services/calls.py`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from shared.telemetry import meter as _meter
from shared.telemetry import tracer as _tracer

TRACEPARENT = "traceparent"

http_duration = _meter.create_histogram(
    "http.server.request.duration", unit="s", description="Duration of HTTP requests Cirrus served"
)
queue_processing = _meter.create_histogram(
    "messaging.process.duration", unit="s", description="Time to process one queue message"
)
queue_age = _meter.create_histogram(
    "cirrus.queue.message.age", unit="s", description="Time a queue message waited before processing"
)
poisoned = _meter.create_counter("cirrus.queue.poisoned", description="Messages that reached a poison queue")


@dataclass
class ModelCallTotals:
    """The model calls made for one HTTP request or queue message, summed for its span."""

    calls: int = 0
    models: list[str] = field(default_factory=list)  # each once, in order
    deployments: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None  # None until a call with a known price

    def add(
        self,
        model: str,
        *,
        deployment: str | None,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float | None,
    ) -> None:
        self.calls += 1
        if model not in self.models:
            self.models.append(model)
        if deployment and deployment not in self.deployments:
            self.deployments.append(deployment)
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        if cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost_usd

    def attributes(self) -> dict[str, Any]:
        if not self.calls:
            return {}
        attributes = {
            "cirrus.model_calls": self.calls,
            "cirrus.model": ",".join(self.models),
            "cirrus.deployment": ",".join(self.deployments) or None,
            "cirrus.input_tokens": self.input_tokens,
            "cirrus.output_tokens": self.output_tokens,
            "cirrus.cost_usd": round(self.cost_usd, 10) if self.cost_usd is not None else None,
        }
        return {k: v for k, v in attributes.items() if v is not None}


_model_calls: ContextVar[ModelCallTotals | None] = ContextVar("cirrus_model_calls", default=None)


def model_call_totals() -> ModelCallTotals | None:
    """Where a model call started now adds itself: its request's or message's totals, if any."""
    return _model_calls.get()


@contextlib.contextmanager
def counting_model_calls(totals: ModelCallTotals) -> Iterator[ModelCallTotals]:
    """Model calls started inside add themselves to `totals` (however long they outlive the block)."""
    token = _model_calls.set(totals)
    try:
        yield totals
    finally:
        _model_calls.reset(token)


def with_trace_context(message: Mapping[str, Any]) -> dict[str, Any]:
    """`message` plus the current trace context (`traceparent`), for a queue message."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    extra = {TRACEPARENT: carrier[TRACEPARENT]} if TRACEPARENT in carrier else {}
    return {**message, **extra}


def context_of(carrier: Mapping[str, Any] | None) -> context.Context:
    """The trace context a message or a request's headers carry (empty if none or invalid)."""
    value = (carrier or {}).get(TRACEPARENT)
    return propagate.extract({TRACEPARENT: value} if isinstance(value, str) else {})


@contextlib.contextmanager
def consuming(
    queue: str,
    message: Mapping[str, Any] | None,
    *,
    message_id: str | None = None,
    dequeue_count: int | None = None,
    inserted: datetime | None = None,
    poison: bool = False,
) -> Iterator[Span]:
    """A CONSUMER span for one queue message, child of the trace the message carries."""
    started = time.perf_counter()
    attributes = {
        "messaging.system": "azure_queues",
        "messaging.operation.type": "process",
        "messaging.destination.name": queue,
        "messaging.message.id": message_id,
        "messaging.azure_queues.dequeue_count": dequeue_count,
    }
    metric = {"messaging.destination.name": queue}
    if inserted is not None:
        queue_age.record(max(0.0, (datetime.now(UTC) - inserted).total_seconds()), metric)
    if poison:
        poisoned.add(1, metric)
    span = _tracer.start_span(
        f"process {queue}",
        context=context_of(message),
        kind=SpanKind.CONSUMER,
        attributes={k: v for k, v in attributes.items() if v is not None},
    )
    outcome = "ok"
    totals = ModelCallTotals()
    try:
        with trace.use_span(span, end_on_exit=False), counting_model_calls(totals):
            yield span
    except BaseException as exc:
        outcome = "error"
        span.set_status(StatusCode.ERROR, type(exc).__name__)
        span.set_attribute("error.type", type(exc).__name__)
        raise
    finally:
        span.set_attributes(totals.attributes())
        span.end()
        queue_processing.record(time.perf_counter() - started, {**metric, "cirrus.outcome": outcome})


@contextlib.contextmanager
def timer_invocation(function: str) -> Iterator[Span]:
    """A SERVER span for one timer-triggered invocation of `function` (a new trace)."""
    attributes = {"faas.trigger": "timer", "cirrus.function": function}
    span = _tracer.start_span(function, kind=SpanKind.SERVER, attributes=attributes)
    try:
        with trace.use_span(span, end_on_exit=False):
            yield span
    except BaseException as exc:
        span.set_status(StatusCode.ERROR, type(exc).__name__)
        span.set_attribute("error.type", type(exc).__name__)
        raise
    finally:
        span.end()


@dataclass(frozen=True)
class HttpRequestFacts:
    """What a SERVER span says about its request (OpenTelemetry's HTTP server attributes)."""

    method: str
    route: str  # the template: `/v1/files/{file_id}`
    path: str
    scheme: str
    host: str
    port: int | None
    user_agent: str | None
    function: str  # the Functions function's name

    def attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "http.request.method": self.method,
            "http.route": self.route,
            "url.path": self.path,
            "url.scheme": self.scheme,
            "server.address": self.host,
            "server.port": self.port,
            "user_agent.original": self.user_agent,
            "cirrus.function": self.function,
        }
        return {k: v for k, v in attributes.items() if v is not None}


def server_span(request: HttpRequestFacts, headers: Mapping[str, str]) -> Span:
    """A SERVER span for one HTTP request, continuing the caller's trace if it sent one."""
    return _tracer.start_span(
        f"{request.method} {request.route}",
        context=context_of({TRACEPARENT: headers.get(TRACEPARENT)}),
        kind=SpanKind.SERVER,
        attributes=request.attributes(),
    )


def end_server_span(
    span: Span,
    request: HttpRequestFacts,
    status: int,
    started: float,
    *,
    error: BaseException | None = None,
    totals: ModelCallTotals | None = None,
) -> None:
    """End the span with its status and the request's model calls; `error.type` is the exception's
    class if one escaped, else the status code for a 5xx (a 4xx is the client's error, not the
    server's)."""
    span.set_attribute("http.response.status_code", status)
    if totals is not None:
        span.set_attributes(totals.attributes())
    error_type = type(error).__name__ if error is not None else str(status) if status >= 500 else None
    if error_type is not None:
        span.set_attribute("error.type", error_type)
        span.set_status(StatusCode.ERROR)
    span.end()
    metric: dict[str, str | int] = {
        "http.request.method": request.method,
        "http.route": request.route,
        "url.scheme": request.scheme,
        "cirrus.function": request.function,
        "http.response.status_code": status,
    }
    if error_type is not None:
        metric["error.type"] = error_type
    http_duration.record(time.perf_counter() - started, metric)
