"""OpenTelemetry: Cirrus's tracer, meter and instruments, and the exporter set-up.

The tracer and meter are proxies: they bind to whichever provider is installed when they are
used, so tests can install an in-memory exporter and production installs Azure Monitor's.
Attribute names follow the OpenTelemetry GenAI semantic conventions. Prompt and completion text
are never recorded.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
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

log = logging.getLogger("cirrus.telemetry")


@functools.cache
def configure_exporters(appinsights_connection_string: str | None) -> str:
    """Install exporters once per process; returns which ("azure-monitor" or "none")."""
    if not appinsights_connection_string:
        return "none"
    from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415 - heavy, optional

    configure_azure_monitor(connection_string=appinsights_connection_string, logger_name=SCOPE)
    log.info("exporting telemetry to Application Insights")
    return "azure-monitor"


def set_attributes(span: Span, attributes: Mapping[str, Any]) -> None:
    """Set the attributes that have a value; OpenTelemetry rejects None."""
    span.set_attributes({k: v for k, v in attributes.items() if v is not None})


def record_error(span: Span, exc: BaseException) -> None:
    span.set_status(StatusCode.ERROR, type(exc).__name__)
    span.set_attribute("error.type", getattr(exc, "code", None) or type(exc).__name__)
