"""End to end: a job's worker killed between two agent steps; another resumes the run.

A dedicated local host works its own jobs queue with a 3-second message lease and job lease, so
a killed worker's job comes back within seconds (in Azure: 10 minutes and 90 seconds). It talks to
a fake provider of its own, so no other test's traffic can take the answers scripted here.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.helpers import calc, events, script, submit, wait
from tools.stack import LOOPBACK, fake_provider, free_port, local_host

QUEUE = "e2e-jobs-workers"


@pytest.fixture
def own_provider(tmp_path_factory) -> Iterator[httpx.Client]:
    port = free_port()
    process = fake_provider(port, tmp_path_factory.mktemp("job-provider")).start()
    try:
        process.wait_ready()
        with httpx.Client(base_url=f"http://{LOOPBACK}:{port}", timeout=10) as client:
            yield client
    finally:
        process.stop()


def start_host(stack, tmp_path_factory, name: str, provider: httpx.Client):
    env = {
        **stack.env,
        "CIRRUS_LOCAL_PROVIDER_URL": str(provider.base_url.join("/v1")),
        "JOBS_QUEUE": QUEUE,
        "FUNCHOST_LEASE_SECONDS": "3",
        "CIRRUS_JOB_LEASE_SECONDS": "3",
    }
    port = free_port()
    process = local_host(port, env, tmp_path_factory.mktemp(name) / "funchost.log").start()
    process.wait_ready()
    return process, f"http://{LOOPBACK}:{port}"


def test_a_killed_worker_resumes_without_repeating_a_finished_tool_call(
    stack, own_provider, tmp_path_factory
):
    provider = own_provider
    first, url = start_host(stack, tmp_path_factory, "job-worker-a", provider)
    second = None
    try:
        # Step 1 calls the calculator; step 2's answer takes 4 s, so the kill lands between them.
        script(provider, calc("6*7"), {"reply": "slow", "latency_ms": 4000})
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {stack.master_key}"}, timeout=30
        ) as client:
            job = submit(client, type="agent", input="What is 6*7?", tools=["calculator"], max_steps=5)
            deadline = time.time() + 20
            while not any(e["event"] == "tool.result" for e in events_so_far(client, job["id"])):
                assert time.time() < deadline, "the tool never ran"
                time.sleep(0.1)
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        script(provider, {"reply": "Resumed: 42."})
        second, url = start_host(stack, tmp_path_factory, "job-worker-b", provider)
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {stack.master_key}"}, timeout=30
        ) as client:
            done = wait(client, job["id"], timeout=40)
            assert done["status"] == "completed", done
            assert done["result"]["output_text"] == "Resumed: 42."
            assert [s["kind"] for s in done["steps"]].count("tool") == 1  # the calculator ran once
            results = [e for e in events(client, job["id"]) if e["event"] == "tool.result"]
            assert len(results) == 1
        last = provider.get("/_control/requests").json()[-1]["body"]["messages"]
        assert [m["role"] for m in last].count("tool") == 1  # the resumed step saw the saved result
    finally:
        for process in (first, second):
            if process is not None:
                process.stop()


def events_so_far(client: httpx.Client, job_id: str) -> list[dict]:
    """The events stored so far, without following the stream to the job's end."""
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        found = []
        for line in response.iter_lines():
            if line.startswith("event: "):
                found.append({"event": line[7:]})
                if line == "event: tool.result":
                    break
        return found


pytestmark = pytest.mark.timeout(120)
