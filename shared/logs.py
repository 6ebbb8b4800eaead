"""Structured logs: every record carries the request id and the current trace and span ids.

`configure_logging(json_output, level)` puts `ContextFilter` and one formatter (JSON lines, or
text) on the root logger's handlers, or installs one stderr handler if there are none; calling it
again changes nothing but the format and level. The filter adds `trace_id` and `span_id` (hex, from
the current OpenTelemetry span; empty when there is none) and `request_id` (from `request_id_var`,
set with `bind_request_id`) to each record, so a log line can be joined to its trace and request.

The formatters only format what they are given: never log a key, a prompt or a completion.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

CONTEXT_FIELDS = ("trace_id", "span_id", "request_id")
request_id_var: ContextVar[str | None] = ContextVar("cirrus_request_id", default=None)

# What every LogRecord has, so anything else on a record came from `extra=`. The otel* names are
# what OpenTelemetry's logging instrumentation adds when it is enabled: the same ids again.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "otelTraceID",
    "otelSpanID",
    "otelTraceSampled",
    "otelServiceName",
}


@contextlib.contextmanager
def bind_request_id(request_id: str | None) -> Iterator[None]:
    """Log records made inside this block (and tasks it starts) carry `request_id`."""
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


def context_fields(record: logging.LogRecord | None = None) -> dict[str, str]:
    """The request, trace and span ids: those already on `record`, else the current ones."""
    span = trace.get_current_span().get_span_context()
    current = {
        "trace_id": trace.format_trace_id(span.trace_id) if span.is_valid else "",
        "span_id": trace.format_span_id(span.span_id) if span.is_valid else "",
        "request_id": request_id_var.get() or "",
    }
    if record is None:
        return current
    return {name: str(getattr(record, name, current[name]) or "") for name in CONTEXT_FIELDS}


class ContextFilter(logging.Filter):
    """Adds `request_id`, `trace_id` and `span_id` to every record; ids passed in `extra` win."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in context_fields(record).items():
            setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the ids, exception, then `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **context_fields(record),
        }
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and name not in entry and not name.startswith("_"):
                entry[name] = value
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [trace_id=… span_id=… request_id=…] message`, naming only the ids there are."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{name}={value}" for name, value in context_fields(record).items() if value)
        return self._fmt % {**vars(record), "ids": f" [{ids}]" if ids else ""}  # type: ignore[operator]


class _CirrusStreamHandler(logging.StreamHandler):
    """The stderr handler `configure_logging` installs when the root logger has none."""


def configure_logging(json_output: bool, level: str) -> None:
    """Give every root handler the context filter and the format; safe to call more than once.

    Installs one stderr handler if the root logger has none (the Functions worker and the local
    host install theirs first). OpenTelemetry's own logging handlers get the filter but keep
    their format. `level` is the level of Cirrus's loggers (`cirrus.*`).
    """
    logging.getLogger("cirrus").setLevel(level)
    # One access line per request repeats what request telemetry already has, at a cost per
    # request; uvicorn (the Functions worker's HTTP server too) logs them at INFO.
    logging.getLogger("uvicorn.access").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    # The Functions worker sets the root logger to INFO, where the Azure SDK's HTTP logging policies
    # (Storage's, Cosmos's) write every request's and response's headers, and the worker library
    # (`azure.functions`, azure-functions-runtime) three lines per invocation: in Azure each line is
    # a billed trace. Their warnings and errors still pass.
    logging.getLogger("azure").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(_CirrusStreamHandler(sys.stderr))
    formatter = JsonFormatter() if json_output else TextFormatter()
    for handler in root.handlers:
        add_context_filter(handler)
        if not _is_opentelemetry_handler(handler):  # it sends the message itself, with the ids apart
            handler.setFormatter(formatter)


def add_context_filter(handler: logging.Handler) -> None:
    """Add `ContextFilter` to `handler` unless it has one."""
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())


def _is_opentelemetry_handler(handler: logging.Handler) -> bool:
    return type(handler).__module__.startswith("opentelemetry.")
