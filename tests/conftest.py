"""Fixtures shared by every tier. Servers bind to 127.0.0.1 on free ports and stop at session end."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tools.stack import Emulators, Ports

# LiteLLM otherwise fetches its price list from the internet when imported.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulators]:
    """Azurite (Blob, Queue) and the Cosmos DB server, real servers on free loopback ports."""
    running = Emulators(Ports.free(), tmp_path_factory.mktemp("emulators")).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session", autouse=True)
def _span_exporter():
    """A recording TracerProvider with an in-memory exporter, set first so nothing else can (a
    container without exporters would install one that records nothing)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # an app container may have installed one already
        provider = TracerProvider()
        trace.set_tracer_provider(provider)  # once per process, as OpenTelemetry allows
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture(scope="session", autouse=True)
def _metric_reader():
    """An in-memory reader on the process's MeterProvider, set first so nothing else can."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


@pytest.fixture
def recorded_metrics(_metric_reader):
    """Names of the metrics recorded so far in this process (cumulative)."""

    def names() -> set[str]:
        data = _metric_reader.get_metrics_data()
        return {
            metric.name
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }

    return names


@pytest.fixture
def spans(_span_exporter):
    """Spans finished during the test, from an in-memory exporter."""
    _span_exporter.clear()
    return _span_exporter


@pytest.fixture(scope="session")
def fake_provider_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The fake OpenAI-compatible upstream, a real HTTP server in its own process."""
    from tools.stack import LOOPBACK, fake_provider, free_port

    port = free_port()
    process = fake_provider(port, tmp_path_factory.mktemp("fake-provider")).start()
    try:
        process.wait_ready()
        yield f"http://{LOOPBACK}:{port}"
    finally:
        process.stop()
