"""The local stack as users run it: emulators, fake provider and the local Functions host."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from tools.stack import DEV_MASTER_KEY, LOOPBACK, Emulators, app_env, fake_provider, free_port, local_host


@dataclass(frozen=True)
class LocalStack:
    base_url: str  # the local Functions host
    provider_url: str  # the fake provider's root (its control API lives under /_control)
    master_key: str
    log: Path
    env: dict[str, str]  # the host's environment, for starting another host on the same stack

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


@pytest.fixture(scope="session")
def stack(
    emulators: Emulators, fake_provider_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("local-host")
    port = free_port()
    provider_port = int(fake_provider_url.rsplit(":", 1)[1])
    env = app_env(
        emulators,
        provider_port,
        CIRRUS_MASTER_KEY=DEV_MASTER_KEY,
        COSMOS_DATABASE="cirrus-e2e",
        CIRRUS_MODEL_CONFIG=str(Path(__file__).parent / "model_list.yaml"),
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
    host = local_host(port, env, log).start()
    try:
        host.wait_ready()
        yield LocalStack(f"http://{LOOPBACK}:{port}", fake_provider_url, DEV_MASTER_KEY, log, env)
    finally:
        host.stop()


@pytest.fixture
def provider(stack: LocalStack) -> Iterator[httpx.Client]:
    """The fake provider's control API, reset so each test scripts its own behaviour."""
    with stack.provider() as client:
        client.post("/_control/reset").raise_for_status()
        yield client


# --- workers of their own, for crash tests --------------------------------------------------------


@pytest.fixture
def own_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A fake provider of the test's own, so no other test's traffic takes its scripted answers."""
    port = free_port()
    process = fake_provider(port, tmp_path_factory.mktemp("own-provider")).start()
    try:
        process.wait_ready()
        with httpx.Client(base_url=f"http://{LOOPBACK}:{port}", timeout=10) as client:
            yield client
    finally:
        process.stop()


@dataclass
class WorkerHosts:
    """Local hosts on the stack's emulators that work a jobs queue of their own, with 3-second
    message and job leases, so a killed worker's job comes back within seconds (in Azure: 10
    minutes and 90 seconds). They call `provider`."""

    stack: LocalStack
    provider: httpx.Client
    tmp: pytest.TempPathFactory
    queue: str = field(default_factory=lambda: f"e2e-workers-{uuid.uuid4().hex[:12]}")
    started: list = field(default_factory=list)

    def start(self) -> str:
        """Start one more host; its base URL once it is ready."""
        env = {
            **self.stack.env,
            "CIRRUS_LOCAL_PROVIDER_URL": str(self.provider.base_url.join("/v1")),
            "JOBS_QUEUE": self.queue,
            "FUNCHOST_LEASE_SECONDS": "3",
            "CIRRUS_JOB_LEASE_SECONDS": "3",
        }
        port = free_port()
        process = local_host(port, env, self.tmp.mktemp("worker") / "funchost.log").start()
        self.started.append(process)
        process.wait_ready()
        return f"http://{LOOPBACK}:{port}"

    def kill(self) -> None:
        """SIGKILL the newest host, as a worker dies: no shutdown, no message given back."""
        process = self.started[-1]
        os.killpg(process.proc.pid, signal.SIGKILL)
        process.proc.wait()

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


@pytest.fixture
def workers(
    stack: LocalStack, own_provider: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerHosts]:
    hosts = WorkerHosts(stack, own_provider, tmp_path_factory)
    try:
        yield hosts
    finally:
        hosts.stop_all()
