"""Structured logs (ids on every record, JSON and text formats, idempotent set-up) and the exporter set-up."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from opentelemetry import trace

from shared import telemetry
from shared.config import Settings
from shared.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    bind_request_id,
    configure_logging,
    request_id_var,
)
from tools.stack import LOOPBACK, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    """A logger of its own writing through the filter and the JSON formatter into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("cirrus.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, buffer, handler
    logger.removeHandler(handler)
    logger.propagate = True


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


@contextlib.contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger without handlers (pytest's own come back after); the levels
    `configure_logging` sets (and the root's) restored."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    levels = {name: logging.getLogger(name).level for name in ("", "cirrus", "azure", "uvicorn.access")}
    root.handlers[:] = []
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


# --- ids on every record ------------------------------------------------------------------------


def test_a_line_inside_a_span_carries_its_trace_and_span_ids(spans, capture):
    logger, buffer, _ = capture
    with trace.get_tracer("test").start_as_current_span("work") as span:
        logger.info("inside")
    (line,) = lines(buffer)
    assert line["trace_id"] == trace.format_trace_id(span.get_span_context().trace_id)
    assert line["span_id"] == trace.format_span_id(span.get_span_context().span_id)
    assert len(line["trace_id"]) == 32 and len(line["span_id"]) == 16
    assert [s.name for s in spans.get_finished_spans()] == ["work"]


def test_outside_a_span_and_a_request_the_ids_are_empty(capture):
    logger, buffer, _ = capture
    logger.info("outside")
    (line,) = lines(buffer)
    assert (line["trace_id"], line["span_id"], line["request_id"]) == ("", "", "")


def test_bind_request_id_sets_the_request_id_for_the_block_and_restores_it(capture):
    logger, buffer, _ = capture
    with bind_request_id("req_outer"):
        logger.info("one")
        with bind_request_id("req_inner"):
            logger.info("two")
        logger.info("three")
    logger.info("four")
    assert [line["request_id"] for line in lines(buffer)] == ["req_outer", "req_inner", "req_outer", ""]
    assert request_id_var.get() is None


async def test_tasks_started_inside_the_block_keep_the_request_id(capture):
    logger, buffer, _ = capture

    async def work() -> None:
        await asyncio.sleep(0)
        logger.info("in a task")

    with bind_request_id("req_task"):
        task = asyncio.create_task(work())
    await task
    assert lines(buffer)[0]["request_id"] == "req_task"


def test_ids_given_in_extra_are_kept(capture):
    logger, buffer, _ = capture
    with bind_request_id("req_bound"):
        logger.info("queued", extra={"request_id": "req_of_the_message"})
    assert lines(buffer)[0]["request_id"] == "req_of_the_message"


# --- formats ------------------------------------------------------------------------------------


def test_json_line_has_the_fields_then_the_extra_fields(capture):
    logger, buffer, _ = capture
    with bind_request_id("req_1"):
        logger.warning("model %s answered", "m1", extra={"model": "m1", "tokens": 12, "odd": object()})
    (line,) = lines(buffer)
    assert list(line)[:7] == ["ts", "level", "logger", "message", "trace_id", "span_id", "request_id"]
    assert line["level"] == "WARNING"
    assert line["logger"] == "cirrus.test_logs"
    assert line["message"] == "model m1 answered"
    assert line["request_id"] == "req_1"
    assert (line["model"], line["tokens"]) == ("m1", 12)
    assert line["odd"].startswith("<object object")  # not JSON: written as its str()
    assert line["ts"].endswith("Z")
    assert datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
    assert "exception" not in line
    assert len(buffer.getvalue().splitlines()) == 1


def test_json_line_carries_the_exception_text_on_one_line(capture):
    logger, buffer, _ = capture
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed")
    (line,) = lines(buffer)  # the traceback's newlines are escaped: still one line
    assert line["message"] == "it failed"
    assert line["level"] == "ERROR"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ValueError: boom")


def test_text_format_names_the_ids_there_are_and_appends_the_exception(spans, capture):
    logger, buffer, handler = capture
    handler.setFormatter(TextFormatter())
    logger.info("no ids")
    with trace.get_tracer("test").start_as_current_span("work") as span, bind_request_id("req_9"):
        try:
            raise KeyError("k")
        except KeyError:
            logger.exception("with ids")
    first, second, *traceback = buffer.getvalue().splitlines()
    assert first.endswith(" INFO cirrus.test_logs no ids")
    ids = trace.format_trace_id(span.get_span_context().trace_id)
    assert f" ERROR cirrus.test_logs [trace_id={ids} span_id=" in second
    assert second.endswith(" request_id=req_9] with ids")
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == "KeyError: 'k'"


# --- configure_logging ----------------------------------------------------------------------------


def test_configure_logging_installs_one_stderr_handler_however_often_it_is_called(capsys):
    with bare_root() as root:
        configure_logging(json_output=True, level="DEBUG")
        configure_logging(json_output=True, level="DEBUG")
        (handler,) = root.handlers
        assert sum(isinstance(f, ContextFilter) for f in handler.filters) == 1
        assert logging.getLogger("cirrus").level == logging.DEBUG
        with bind_request_id("req_2"):
            logging.getLogger("cirrus.x").debug("hello")
    (line,) = [json.loads(raw) for raw in capsys.readouterr().err.splitlines()]
    assert (line["message"], line["request_id"], line["logger"]) == ("hello", "req_2", "cirrus.x")


def test_configure_logging_reformats_the_handlers_already_there_and_switches_format():
    from opentelemetry._logs import NoOpLoggerProvider
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    buffer = io.StringIO()
    host = logging.StreamHandler(buffer)  # e.g. the local host's basicConfig handler
    otel = LoggingHandler(logger_provider=NoOpLoggerProvider())
    with bare_root() as root:
        root.addHandler(host)
        root.addHandler(otel)
        configure_logging(json_output=True, level="INFO")
        configure_logging(json_output=False, level="INFO")
        assert root.handlers == [host, otel]
        assert isinstance(host.formatter, TextFormatter)
        assert otel.formatter is None  # it exports the message; the ids travel as attributes
        assert all(sum(isinstance(f, ContextFilter) for f in h.filters) == 1 for h in (host, otel))
        with bind_request_id("req_3"):
            logging.getLogger("azure.core").warning("not Cirrus's logger, still the ids")
    (line,) = buffer.getvalue().splitlines()
    assert line.endswith(" WARNING azure.core [request_id=req_3] not Cirrus's logger, still the ids")


def test_the_azure_sdks_request_logs_stay_out_at_the_workers_info_level():
    """The Functions worker sets the root logger to INFO; the SDKs' HTTP logging policies log every
    request's headers there (found when the local host began running the real worker)."""
    buffer = io.StringIO()
    with bare_root() as root:
        root.addHandler(logging.StreamHandler(buffer))
        root.setLevel(logging.INFO)
        configure_logging(json_output=False, level="INFO")
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").info("Request URL: ...")
        logging.getLogger("azure.cosmos._cosmos_http_logging_policy").info("Response status: 201")
        logging.getLogger("azure.storage.queue").warning("a warning still passes")
        logging.getLogger("cirrus.x").info("Cirrus's own INFO too")
        configure_logging(json_output=False, level="DEBUG")
        assert logging.getLogger("azure").getEffectiveLevel() == logging.DEBUG
    lines = buffer.getvalue().splitlines()
    assert [line.rsplit(" ", 4)[-4:] for line in lines] == [
        ["a", "warning", "still", "passes"],
        ["Cirrus's", "own", "INFO", "too"],
    ]


# --- settings -----------------------------------------------------------------------------------


def settings(**values) -> Settings:
    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "COSMOS_ENDPOINT": "http://127.0.0.1:8081"}
    if values.get("CIRRUS_ENV") == "azure":
        base = {
            "CIRRUS_MASTER_KEY": "sk-" + "x" * 40,
            "CIRRUS_KEY_HASH_SECRET": "h" * 40,
            "CIRRUS_MODEL_CONFIG": "models.yaml",
            "AzureWebJobsStorage__accountName": "acct",
            "COSMOS_ENDPOINT": "https://acct.documents.azure.com:443/",
        }
    return Settings(_env_file=None, **{"CIRRUS_ENV": "local", **base, **values})


def test_log_format_is_json_locally_and_text_in_azure_unless_set(monkeypatch):
    for name in ("CIRRUS_LOG_FORMAT", "CIRRUS_TRACE_CONTENT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert settings().log_format == "json"
    assert settings(CIRRUS_ENV="azure").log_format == "text"
    assert settings(CIRRUS_ENV="azure", CIRRUS_LOG_FORMAT="json").log_format == "json"
    assert settings().trace_content is False
    assert settings(CIRRUS_TRACE_CONTENT="true").trace_content is True
    assert settings(OTEL_EXPORTER_OTLP_ENDPOINT="").otlp_endpoint is None
    with pytest.raises(ValueError, match="CIRRUS_LOG_FORMAT"):
        settings(CIRRUS_LOG_FORMAT="xml")
    with pytest.raises(ValueError, match="http"):
        settings(OTEL_EXPORTER_OTLP_ENDPOINT="127.0.0.1:4318")


# --- configure_exporters ------------------------------------------------------------------------


@pytest.fixture
def otel_globals(monkeypatch, spans):
    """Put back the process-wide state configure_exporters changes: providers, processors, handlers.

    OpenTelemetry sets each provider once per process and has no public reset; like its own test
    utilities, this swaps the globals for fresh ones during the test. The in-memory TracerProvider
    (from `spans`) stays, and loses the span processor the test adds to it.
    """
    from opentelemetry._logs import _internal as logs_api
    from opentelemetry.metrics import _internal as metrics_api
    from opentelemetry.util._once import Once

    for name, fresh in [
        ("_METER_PROVIDER", None),
        ("_METER_PROVIDER_SET_ONCE", Once()),
        ("_PROXY_METER_PROVIDER", metrics_api._ProxyMeterProvider()),  # the app's meters stay unbound
    ]:
        monkeypatch.setattr(metrics_api, name, fresh)
    for name, fresh in [
        ("_LOGGER_PROVIDER", None),
        ("_LOGGER_PROVIDER_SET_ONCE", Once()),
        ("_PROXY_LOGGER_PROVIDER", logs_api.ProxyLoggerProvider()),
    ]:
        monkeypatch.setattr(logs_api, name, fresh)
    processors = trace.get_tracer_provider()._active_span_processor
    before = processors._span_processors
    monkeypatch.setattr(processors, "_span_processors", before)
    cirrus = logging.getLogger("cirrus")
    monkeypatch.setattr(cirrus, "handlers", list(cirrus.handlers))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")  # seconds, in this exporter version
    for signal in ("TRACES", "METRICS", "LOGS"):
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", raising=False)
    monkeypatch.setattr(telemetry, "_installed", [])
    telemetry.configure_exporters.cache_clear()
    yield
    telemetry.configure_exporters.cache_clear()
    for added in processors._span_processors[len(before) :]:
        added.shutdown()
    for provider in (metrics_api._METER_PROVIDER, logs_api._LOGGER_PROVIDER):
        if provider is not None:
            provider.shutdown()


def test_no_destination_means_no_exporter():
    telemetry.configure_exporters.cache_clear()
    try:
        assert telemetry.configure_exporters(None) == "none"
        assert telemetry.configure_exporters(None, None) == "none"
        assert telemetry.configure_exporters("", "") == "none"
    finally:
        telemetry.configure_exporters.cache_clear()


def test_otlp_joins_the_provider_already_set_instead_of_replacing_it(otel_globals, spans):
    from opentelemetry import _logs, metrics
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = trace.get_tracer_provider()
    started = time.monotonic()
    assert telemetry.configure_exporters(None, f"http://{LOOPBACK}:{free_port()}") == "otlp"
    assert time.monotonic() - started < 2  # no network on set-up
    assert telemetry.configure_exporters(None, f"http://{LOOPBACK}:1") == "otlp"  # still one set

    assert trace.get_tracer_provider() is provider
    added = provider._active_span_processor._span_processors[-1]
    assert isinstance(added, BatchSpanProcessor)
    assert [type(p).__name__ for p in provider._active_span_processor._span_processors].count(
        "BatchSpanProcessor"
    ) == 1
    with telemetry.tracer.start_as_current_span("after"):
        pass
    assert [s.name for s in spans.get_finished_spans()] == ["after"]  # the in-memory exporter still sees it

    assert isinstance(metrics.get_meter_provider(), MeterProvider)
    logger_provider = _logs.get_logger_provider()
    assert isinstance(logger_provider, LoggerProvider)
    (handler,) = [h for h in logging.getLogger("cirrus").handlers if isinstance(h, LoggingHandler)]
    assert any(isinstance(f, ContextFilter) for f in handler.filters)

    started = time.monotonic()
    added.shutdown()  # the export to the closed port fails within the short timeout, without raising
    assert time.monotonic() - started < 5


def test_in_a_fresh_process_otlp_sets_sdk_providers_and_exits_promptly():
    """No provider set before: configure_exporters sets them; nothing heavy is imported until it runs."""
    script = textwrap.dedent(
        f"""
        import json, logging, sys
        from opentelemetry import _logs, metrics, trace
        from shared import telemetry
        heavy = [m for m in sys.modules if m.startswith(("opentelemetry.exporter", "azure.monitor"))]
        result = telemetry.configure_exporters(None, "http://{LOOPBACK}:{free_port()}")
        with telemetry.tracer.start_as_current_span("work"):
            logging.getLogger("cirrus.test").warning("exported as a log record")
        telemetry.token_usage.record(3)
        providers = (trace.get_tracer_provider(), metrics.get_meter_provider(), _logs.get_logger_provider())
        print(json.dumps({{
            "result": result,
            "heavy_before": heavy,
            "providers": [type(p).__module__.split(".")[1] for p in providers],
            "service": trace.get_tracer_provider().resource.attributes["service.name"],
        }}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPLICATIONINSIGHTS"))}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**env, "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 20  # exits although the collector is unreachable
    out = json.loads(done.stdout)
    assert out["result"] == "otlp"
    assert out["heavy_before"] == []
    assert out["providers"] == ["sdk", "sdk", "sdk"]
    assert out["service"] == "cirrus"


def test_in_a_fresh_process_without_exporters_spans_have_ids_but_record_nothing():
    """Nothing exports them, so spans are not recorded (cheap), yet logs and messages get real ids."""
    script = textwrap.dedent(
        """
        import json
        from shared import telemetry
        from shared.logs import context_fields
        assert telemetry.configure_exporters(None) == "none"
        with telemetry.tracer.start_as_current_span("work", attributes={"a": 1}) as span:
            fields = context_fields()
            print(json.dumps({"recording": span.is_recording(), "valid": span.get_span_context().is_valid,
                              "trace_id": fields["trace_id"], "span_id": fields["span_id"]}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPLICATIONINSIGHTS"))}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["recording"] is False and out["valid"] is True
    assert len(out["trace_id"]) == 32 and len(out["span_id"]) == 16
