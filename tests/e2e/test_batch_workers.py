"""End to end: a batch worked by two local host processes at once, and one of them killed midway.

Both hosts serve the same app on the same emulators and consume the same batch queue, as two
Function App instances would. Their message lease is 3 s (`FUNCHOST_LEASE_SECONDS`) instead of
10 minutes, so the messages a killed host held come back within seconds.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.helpers import chat_line, results, upload, wait_batch
from tools.stack import LOOPBACK, ManagedProcess, free_port, local_host

SHARED_QUEUE = "e2e-batch-workers"
REQUESTS = 120


class Host:
    def __init__(self, process: ManagedProcess, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def chunks_run(self) -> int:
        return self.log.read_text().count("Executed 'Functions.run_batch' (Succeeded")


@pytest.fixture(scope="module")
def hosts(stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Host]]:
    env = {
        **stack.env,
        "BATCH_QUEUE": SHARED_QUEUE,
        "CIRRUS_BATCH_CHUNK_SIZE": "10",
        "CIRRUS_BATCH_CONCURRENCY": "2",
        "FUNCHOST_LEASE_SECONDS": "3",
        "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01",
        # Two chunk messages at a time per host, so neither host takes the whole batch at once.
        "AzureFunctionsJobHost__extensions__queues__batchSize": "2",
        "AzureFunctionsJobHost__extensions__queues__newBatchThreshold": "1",
    }
    started: list[Host] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            log = tmp_path_factory.mktemp(f"worker-{name}") / "funchost.log"
            started.append(Host(local_host(port, env, log).start(), f"http://{LOOPBACK}:{port}", log))
        for host in started:
            host.process.wait_ready()
        yield started
    finally:
        for host in started:
            host.process.stop()


def submit(host: Host, key: str, prefix: str):
    client = host.client(key)
    lines = [chat_line(f"{prefix}-{i}", model="cirrus-slow", max_tokens=3) for i in range(REQUESTS)]
    return client.batches.create(
        input_file_id=upload(client, lines).id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def assert_each_request_once(client: openai.OpenAI, batch, prefix: str) -> None:
    lines = results(client, batch.output_file_id) + results(client, batch.error_file_id)
    ids = [line["custom_id"] for line in lines]
    assert sorted(ids) == sorted(f"{prefix}-{i}" for i in range(REQUESTS))  # every one, exactly once
    assert batch.request_counts.total == REQUESTS


def test_two_consumers_share_one_batch_without_duplicates(stack, hosts):
    a, b = hosts
    before = [a.chunks_run(), b.chunks_run()]
    batch = submit(a, stack.master_key, "two")
    done = wait_batch(a.client(stack.master_key), batch.id, timeout=90)
    errors = results(a.client(stack.master_key), done.error_file_id)
    assert done.status == "completed" and done.request_counts.completed == REQUESTS, errors[:2]
    assert_each_request_once(a.client(stack.master_key), done, "two")
    assert a.chunks_run() > before[0] and b.chunks_run() > before[1]  # both did some of the work


def test_a_worker_killed_mid_batch_loses_and_repeats_nothing(stack, hosts):
    a, b = hosts
    batch = submit(a, stack.master_key, "kill")
    client = a.client(stack.master_key)
    deadline = time.time() + 60
    while client.batches.retrieve(batch.id).request_counts.completed < 20:
        assert time.time() < deadline, "the batch never got going"
        time.sleep(0.2)
    os.killpg(a.process.proc.pid, signal.SIGKILL)  # no shutdown: its leased chunks just go quiet
    a.process.proc.wait()
    survivor = b.client(stack.master_key)
    done = wait_batch(survivor, batch.id, timeout=120)
    assert done.status == "completed", done
    assert done.request_counts.completed == REQUESTS and done.request_counts.failed == 0
    assert_each_request_once(survivor, done, "kill")
