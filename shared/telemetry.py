"""OpenTelemetry: Cirrus's tracer, meter and instruments, and the exporter set-up.

The tracer and meter are proxies: they bind to whichever provider is installed when they are
used, so tests can install an in-memory exporter and production installs Azure Monitor's.
Attribute names follow the OpenTelemetry GenAI semantic conventions. Prompt and completion text
are never recorded.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, StatusCode

SCOPE = "cirrus"
tracer = trace.get_tracer(SCOPE)
meter = metrics.get_meter(SCOPE)

token_usage = meter.create_histogram(
    "gen_ai.client.token.usage", unit="{token}", description="Tokens used per model call"
)
operation_duration = meter.create_histogram(
    "gen_ai.client.operation.duration", unit="s", description="Duration of model calls"
)
time_to_first_token = meter.create_histogram(
    "gen_ai.server.time_to_first_token", unit="s", description="Time to the first streamed token"
)

log = logging.getLogger("cirrus.telemetry")


@dataclass(frozen=True)
class Sampling:
    """Which traces are exported (CIRRUS_TELEMETRY_SAMPLING): every one (`all`, the default), a fixed
    share of them (`25%`), or at most a rate (`5/s`). A kept item carries the `sampleRate` it was
    kept at, so Application Insights' `itemCount` (100 / sampleRate) adds up to the real traffic.

    A share is decided from the trace id (Application Insights' hash), so every span of a trace, in
    every process, is kept or dropped together. A rate adapts the share to the traffic over the
    last fraction of a second. Logs and metrics are never sampled."""

    percentage: float | None = None  # 0 < p < 100
    per_second: float | None = None  # > 0

    _PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")
    _RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*/\s*s$")

    @classmethod
    def parse(cls, text: str) -> Sampling:
        value = text.strip().lower()
        if value in ("", "all", "100%"):
            return cls()
        if match := cls._PERCENT.match(value):
            percentage = float(match.group(1))
            if 0 < percentage < 100:
                return cls(percentage=percentage)
        elif match := cls._RATE.match(value):
            per_second = float(match.group(1))
            if per_second > 0 and math.isfinite(per_second):
                return cls(per_second=per_second)
        raise ValueError("must be `all`, a percentage between 0 and 100 (`25%`) or a rate above 0 (`5/s`)")

    def __str__(self) -> str:
        if self.percentage is not None:
            return f"{self.percentage:g}%"
        if self.per_second is not None:
            return f"{self.per_second:g}/s"
        return "all"

    def distro_options(self) -> dict[str, float]:
        """The Azure Monitor distro's argument for this sampling. Without one it rate-limits to 5
        traces a second (azure-monitor-opentelemetry 1.8), which drops most requests of a burst."""
        if self.per_second is not None:
            return {"traces_per_second": self.per_second}
        return {"sampling_ratio": (self.percentage if self.percentage is not None else 100.0) / 100}

    def sampler(self) -> Any:
        """The same decision as an OpenTelemetry sampler, for a TracerProvider Cirrus sets itself."""
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON  # noqa: PLC0415 - only when exporting

        if self.percentage is None and self.per_second is None:
            return ALWAYS_ON  # every trace, whatever a caller's `traceparent` flags say
        from azure.monitor.opentelemetry.exporter import (  # noqa: PLC0415 - only when sampling
            ApplicationInsightsSampler,
            RateLimitedSampler,
        )

        if self.per_second is not None:
            return _whole_traces(RateLimitedSampler(self.per_second))
        return ApplicationInsightsSampler((self.percentage or 100.0) / 100)


SAMPLE_RATE = "_MS.sampleRate"  # the span attribute the exporter sends as an item's sampleRate


def _whole_traces(root: Any) -> Any:
    """`root` decides for spans whose parent is not in this process; the others take their parent's
    decision and sampleRate.

    The rate-limited sampler of azure-monitor-opentelemetry-exporter (1.0.0b57) means to do this
    itself but does not: it looks for the parent only in a context passed to it, and the SDK passes
    none for a span started in the current context, which is how every span is started; and a
    span it keeps at 100 % carries no sampleRate, which it takes as no decision. So each span of a
    trace was sampled on its own: a kept request lost its dependencies, a dropped one left them
    orphaned, each with a different sampleRate. (Its fixed-share sampler decides from the trace id
    alone, so its traces are whole anyway.)"""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult  # noqa: PLC0415

    class WholeTraces(Sampler):
        def should_sample(  # noqa: PLR0917 - the Sampler interface
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: Any = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            parent = trace.get_current_span(parent_context)
            parent_context_ = parent.get_span_context()
            if not parent_context_.is_valid or parent_context_.is_remote:
                return root.should_sample(
                    parent_context, trace_id, name, kind, attributes, links, trace_state
                )
            if not parent.is_recording():
                return SamplingResult(Decision.DROP, None, parent_context_.trace_state)
            rate = getattr(parent, "attributes", {}).get(SAMPLE_RATE)
            inherited = {**(attributes or {}), **({SAMPLE_RATE: rate} if rate is not None else {})}
            return SamplingResult(Decision.RECORD_AND_SAMPLE, inherited, parent_context_.trace_state)

        def get_description(self) -> str:
            return f"WholeTraces{{{root.get_description()}}}"

    return WholeTraces()


@dataclass(frozen=True)
class ExportOptions:
    """How to export, besides where: the settings of shared/config.py that concern exporters."""

    sampling: Sampling = field(default_factory=Sampling)
    # Application Insights' Live Metrics: a connection from each instance to the Live Metrics
    # service (the connection string's LiveEndpoint), pinged every few seconds.
    live_metrics: bool = False
    # Local mode: the SDK's own usage reports to Microsoft (statsbeat) are off, as nothing local
    # should call the internet.
    local: bool = False


@functools.cache
def configure_exporters(
    appinsights_connection_string: str | None,
    otlp_endpoint: str | None = None,
    options: ExportOptions = ExportOptions(),
) -> str:
    """Install exporters once per process; returns which: "azure-monitor", "otlp", both ("+"), or "none".

    Application Insights goes through the Azure Monitor distro; OTLP (HTTP/protobuf, traces, metrics
    and logs) to `otlp_endpoint`, the base URL as in `OTEL_EXPORTER_OTLP_ENDPOINT`. A provider set
    before (tests set an in-memory TracerProvider) is never replaced: the exporters are added to it
    (and it keeps its own sampler).
    """
    targets = [
        name
        for name, wanted in (("azure-monitor", appinsights_connection_string), ("otlp", otlp_endpoint))
        if wanted
    ]
    if not targets:
        _ensure_tracer_provider()
        return "none"
    if _installed:  # called again with other arguments: the cache alone would install a second set
        log.warning("telemetry exporters are already installed (%s); not installing others", _installed[0])
        return _installed[0]
    unset, extensible = _providers_already_set()
    pending = _otlp_exporters(otlp_endpoint, unset | set(extensible)) if otlp_endpoint else {}
    _ignore_environment_sampler()
    if appinsights_connection_string:
        _install_azure_monitor(appinsights_connection_string, options, unset, extensible, pending)
    else:
        _install_sdk_providers(unset, pending, options.sampling)
    _add_to_current_providers(pending)
    _attach_log_handler()
    log.info("exporting telemetry to %s (sampling: %s)", " and ".join(targets), options.sampling)
    _installed.append("+".join(targets))
    return _installed[0]


def _ensure_tracer_provider() -> None:
    """Spans with real ids even when nothing is exported, so log lines carry trace and span ids a
    caller's `traceparent` (or a queue message's) can be matched to. Nothing exports them, so none
    is recorded: the sampler drops every span, which then costs only its ids (a recorded span and
    its attributes cost tens of microseconds, three times per request, for nobody)."""
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF  # noqa: PLC0415

    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(TracerProvider(sampler=ALWAYS_OFF))


def set_attributes(span: Span, attributes: Mapping[str, Any]) -> None:
    """Set the attributes that have a value; OpenTelemetry rejects None."""
    span.set_attributes({k: v for k, v in attributes.items() if v is not None})


def record_error(span: Span, exc: BaseException) -> None:
    span.set_status(StatusCode.ERROR, type(exc).__name__)
    span.set_attribute("error.type", getattr(exc, "code", None) or type(exc).__name__)


# --- exporter set-up (helpers of configure_exporters; the exporter packages are imported lazily) -----

SIGNALS = ("traces", "metrics", "logs")
DEFAULT_SERVICE_NAME = "cirrus"
# What configure_exporters installed in this process: OpenTelemetry's providers are set once.
_installed: list[str] = []


def _providers_already_set() -> tuple[set[str], dict[str, Any]]:
    """The signals with no provider yet, and the SDK providers already set that take more exporters."""
    from opentelemetry import _logs  # noqa: PLC0415 - only when exporting
    from opentelemetry.sdk._logs import LoggerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    current = {
        "traces": trace.get_tracer_provider(),
        "metrics": metrics.get_meter_provider(),
        "logs": _logs.get_logger_provider(),
    }
    unset: set[str] = set()
    extensible: dict[str, Any] = {}
    for signal, provider in current.items():
        kind = type(provider).__name__
        if kind.lstrip("_").startswith("Proxy"):  # the API's stand-in until a provider is set
            unset.add(signal)
        elif isinstance(provider, TracerProvider | LoggerProvider):
            log.info("%s: keeping the %s already set, adding the exporters to it", signal, kind)
            extensible[signal] = provider
        else:  # an SDK MeterProvider takes its readers when it is built, not after
            log.warning("%s: a %s is already set and takes no more exporters; not exported", signal, kind)
    return unset, extensible


def _otlp_exporters(endpoint: str, signals: set[str]) -> dict[str, list[Any]]:
    """Batching OTLP/HTTP exporters for `signals`; per-signal OTEL_EXPORTER_OTLP_* variables still apply."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    def url(signal: str) -> str | None:
        # The exporters add `/v1/<signal>` to the variable's base URL, not to an `endpoint` argument.
        if os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"):
            return None
        return f"{endpoint.rstrip('/')}/v1/{signal}"

    build = {
        "traces": lambda: BatchSpanProcessor(OTLPSpanExporter(endpoint=url("traces"))),
        "metrics": lambda: PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url("metrics"))),
        "logs": lambda: BatchLogRecordProcessor(OTLPLogExporter(endpoint=url("logs"))),
    }
    return {signal: [build[signal]()] for signal in SIGNALS if signal in signals}


# The distro's library instrumentations Cirrus turns off. Its own spans already describe each HTTP
# request it serves (FastAPI would add a second SERVER span per request) and each provider call
# (an httpx or urllib span beneath it would repeat it, with the provider's full URL, where some
# providers take their key as a query parameter). `azure_sdk` stays: Cosmos, Blob and Queue calls
# are dependencies of the request or message that made them.
UNINSTRUMENTED = (
    "django",
    "fastapi",
    "flask",
    "httpx",
    "httpx2",
    "psycopg2",
    "requests",
    "urllib",
    "urllib3",
)
# Environment switches of the Azure Monitor SDK, the only ones it has, set unless already set.
# Dynamic configuration ("OneSettings", Microsoft's remote feature flags for the SDK itself) is
# fetched with `requests` from settings.sdk.monitor.azure.com: where that host is unreachable
# (private networks, local runs) the failed fetch was exported as a failing dependency and an
# Exception, a permanent false alarm. Nothing of Cirrus's depends on it.
SDK_ENVIRONMENT = {"APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true"}
SDK_ENVIRONMENT_LOCAL = {"APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true"}


def _install_azure_monitor(
    connection_string: str,
    options: ExportOptions,
    unset: set[str],
    extensible: dict[str, Any],
    pending: dict[str, list[Any]],
) -> None:
    """The distro sets the providers not set yet, with `pending`'s exporters for them too; the
    Application Insights exporters for providers set before join `pending`."""
    for name, value in {**SDK_ENVIRONMENT, **(SDK_ENVIRONMENT_LOCAL if options.local else {})}.items():
        # Read again after set-up (statsbeat on every export), so set for the process, not around the call.
        os.environ.setdefault(name, value)
    from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415 - heavy, optional
    from azure.monitor.opentelemetry.exporter import (  # noqa: PLC0415
        AzureMonitorLogExporter,
        AzureMonitorTraceExporter,
    )
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    handed = {signal: pending.pop(signal, []) if signal in unset else [] for signal in SIGNALS}
    # The distro's only switch for a signal is OTEL_<SIGNAL>_EXPORTER=none (its disable_* arguments
    # are overwritten); without it, it would try to replace a provider set before.
    saved = _set_environ({f"OTEL_{s.upper()}_EXPORTER": "none" for s in SIGNALS if s not in unset})
    try:
        configure_azure_monitor(
            connection_string=connection_string,
            logger_name=SCOPE,
            resource=_resource(),
            span_processors=handed["traces"],
            metric_readers=handed["metrics"],
            log_record_processors=handed["logs"],
            enable_live_metrics=options.live_metrics,
            instrumentation_options={name: {"enabled": False} for name in UNINSTRUMENTED},
            **options.sampling.distro_options(),
        )
    finally:
        _set_environ(saved)
    if "traces" in unset and options.sampling.per_second is not None:
        # The distro builds its TracerProvider with the exporter's rate-limited sampler, which splits
        # traces (see _whole_traces) and takes no other; `sampler` is the provider's public attribute,
        # read by every tracer made from now on (none is made before the first span).
        trace.get_tracer_provider().sampler = options.sampling.sampler()  # type: ignore[attr-defined]
    if "traces" in extensible:
        trace_exporter = AzureMonitorTraceExporter(connection_string=connection_string)
        pending.setdefault("traces", []).append(BatchSpanProcessor(trace_exporter))
    if "logs" in extensible:
        log_exporter = AzureMonitorLogExporter(connection_string=connection_string)
        pending.setdefault("logs", []).append(BatchLogRecordProcessor(log_exporter))


def _ignore_environment_sampler() -> None:
    """CIRRUS_TELEMETRY_SAMPLING decides: the distro would let OTEL_TRACES_SAMPLER override it."""
    for name in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        if os.environ.pop(name, None) is not None:
            log.warning("%s is ignored: CIRRUS_TELEMETRY_SAMPLING sets the sampling", name)


def _install_sdk_providers(unset: set[str], pending: dict[str, list[Any]], sampling: Sampling) -> None:
    """Set SDK providers for the signals that have none; a MeterProvider takes its readers now."""
    from opentelemetry import _logs  # noqa: PLC0415 - only when exporting
    from opentelemetry.sdk._logs import LoggerProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    resource = _resource()
    if "traces" in unset:
        trace.set_tracer_provider(TracerProvider(resource=resource, sampler=sampling.sampler()))
    if "metrics" in unset:
        readers = pending.pop("metrics", [])
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    if "logs" in unset:
        _logs.set_logger_provider(LoggerProvider(resource=resource))


def _add_to_current_providers(pending: dict[str, list[Any]]) -> None:
    from opentelemetry import _logs  # noqa: PLC0415 - only when exporting

    for processor in pending.get("traces", []):
        trace.get_tracer_provider().add_span_processor(processor)  # type: ignore[attr-defined]
    for processor in pending.get("logs", []):
        _logs.get_logger_provider().add_log_record_processor(processor)  # type: ignore[attr-defined]


def _attach_log_handler() -> None:
    """`cirrus.*` records go to the SDK logger provider (once), carrying the request and trace ids."""
    from opentelemetry import _logs  # noqa: PLC0415 - only when exporting
    from opentelemetry.instrumentation.logging.handler import LoggingHandler  # noqa: PLC0415
    from opentelemetry.sdk._logs import LoggerProvider  # noqa: PLC0415

    from shared.logs import add_context_filter  # noqa: PLC0415

    logger = logging.getLogger(SCOPE)
    provider = _logs.get_logger_provider()
    ours = [h for h in logger.handlers if isinstance(h, LoggingHandler)]
    if isinstance(provider, LoggerProvider) and not ours:
        ours.append(LoggingHandler(logger_provider=provider))
        logger.addHandler(ours[0])
    for handler in ours:
        add_context_filter(handler)


def _resource() -> Any:
    """`service.name` "cirrus" unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES names the service."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415 - only when exporting

    detected = Resource.create()
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        return Resource.create({SERVICE_NAME: DEFAULT_SERVICE_NAME})
    return detected


def _set_environ(values: dict[str, str | None]) -> dict[str, str | None]:
    """Set (None: remove) environment variables; returns what they were, to put back."""
    before = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return before
