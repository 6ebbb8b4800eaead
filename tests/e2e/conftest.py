"""The e2e tier's fixtures. The local stack itself (`stack`) lives in tests/conftest.py, so the UI
tier uses the same one: one stack per session."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.conftest import LocalStack
from tools.stack import LOOPBACK, fake_provider, free_port, local_host


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
