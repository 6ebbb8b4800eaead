"""Fixtures shared by every tier. Servers bind to 127.0.0.1 on free ports and stop at session end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tools.oidc_issuer import LOCAL_AUDIENCE, mint_from_state, minter_from_state
from tools.stack import (
    DEV_MASTER_KEY,
    LOOPBACK,
    Emulators,
    Ports,
    app_env,
    free_port,
    local_host,
    local_issuer,
)

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


@pytest.fixture(scope="session")
def oidc_issuer_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The local Entra ID issuer (`python -m tools.oidc_issuer serve`) in its own process; its state
    directory, from which `tools.oidc_issuer.mint_from_state` mints tokens it vouches for."""
    workdir = tmp_path_factory.mktemp("oidc-issuer")
    process = local_issuer(free_port(), workdir / "state", workdir / "oidc-issuer.log").start()
    try:
        process.wait_ready()
        yield workdir / "state"
    finally:
        process.stop()


# --- the local stack as users run it, for the e2e and UI tiers ----------------------------------


@dataclass(frozen=True)
class LocalStack:
    base_url: str  # the local Functions host
    provider_url: str  # the fake provider's root (its control API lives under /_control)
    master_key: str
    log: Path
    env: dict[str, str]  # the host's environment, for starting another host on the same stack
    issuer_state: Path  # the local Entra ID issuer's state directory (keys, address)
    web_origin: str  # a loopback origin the host's CORS allows (no page is served there by default)

    def client(self, key: str | None = None, **options) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key=key or self.master_key, max_retries=0, **options
        )

    def admin(self) -> httpx.Client:
        """HTTP with the master key, for Cirrus's own endpoints (`/v1/keys`, `/v1/usage`)."""
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.master_key}"}, timeout=30
        )

    def new_key(self, **fields) -> dict:
        """A fresh virtual key (the response of `POST /v1/keys`, secret in `key`)."""
        with self.admin() as admin:
            response = admin.post("/v1/keys", json=fields)
        assert response.status_code == 201, response.text
        return response.json()

    def provider(self) -> httpx.Client:
        return httpx.Client(base_url=self.provider_url, timeout=10)

    def entra_token(self, **options) -> str:
        """An access token of the stack's Entra ID issuer, for its audience unless `audience=` says
        otherwise; options as `tools.oidc_issuer.Minter.claims` (roles, oid, app, groups, ttl_s, ...)."""
        return mint_from_state(self.issuer_state, **options)


@pytest.fixture(scope="session")
def stack(
    emulators: Emulators,
    fake_provider_url: str,
    oidc_issuer_state: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("local-host")
    port = free_port()
    provider_port = int(fake_provider_url.rsplit(":", 1)[1])
    env = app_env(
        emulators,
        provider_port,
        # Set outright, not as app_env's defaults: a developer's own CIRRUS_ENTRA_* must not leak in.
        CIRRUS_ENTRA_ISSUERS=minter_from_state(oidc_issuer_state).issuer,
        CIRRUS_ENTRA_AUDIENCE=LOCAL_AUDIENCE,
        CIRRUS_MASTER_KEY=DEV_MASTER_KEY,
        COSMOS_DATABASE="cirrus-e2e",
        CIRRUS_MODEL_CONFIG=str(Path(__file__).parent / "e2e" / "model_list.yaml"),
        E2E_BROKEN_PROVIDER_URL=f"{fake_provider_url}/profile/fault=500/v1",
        E2E_SLOW_PROVIDER_URL=f"{fake_provider_url}/profile/latency_ms=300/v1",
        CIRRUS_MAX_UPLOAD_BYTES="1000000",
        # Two tries a second apart before the poison queue, so poison tests take seconds.
        AzureFunctionsJobHost__extensions__queues__maxDequeueCount="2",
        AzureFunctionsJobHost__extensions__queues__visibilityTimeout="00:00:01",
        USAGE_QUEUE="e2e-usage",
        CIRRUS_SWEEP_SCHEDULE="*/2 * * * * *",  # every 2 s, so the timer's wiring shows in a test
    )
    log = workdir / "funchost.log"
    # Browsers may call the stack from this origin (the UI tier serves a page there), without
    # credentials: CORS as `func start --cors <origin>` applies it.
    web_origin = f"http://{LOOPBACK}:{free_port()}"
    host = local_host(port, env, log, cors=[web_origin], cors_credentials=False).start()
    try:
        host.wait_ready()
        base_url = f"http://{LOOPBACK}:{port}"
        yield LocalStack(base_url, fake_provider_url, DEV_MASTER_KEY, log, env, oidc_issuer_state, web_origin)
    finally:
        host.stop()
