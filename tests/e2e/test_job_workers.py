"""End to end: a job's worker killed between two agent steps; another resumes the run.

The workers are local hosts of their own (the `workers` fixture): their own jobs queue, 3-second
leases, and a fake provider of their own, so no other test's traffic can take the answers
scripted here.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.helpers import calc, events, script, submit, wait


def test_a_killed_worker_resumes_without_repeating_a_finished_tool_call(workers):
    provider = workers.provider
    url = workers.start()
    # Step 1 calls the calculator; step 2's answer takes 4 s, so the kill lands between them.
    script(provider, calc("6*7"), {"reply": "slow", "latency_ms": 4000})
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {workers.stack.master_key}"}, timeout=30
    ) as client:
        job = submit(client, type="agent", input="What is 6*7?", tools=["calculator"], max_steps=5)
        deadline = time.time() + 20
        while not any(e["event"] == "tool.result" for e in events_so_far(client, job["id"])):
            assert time.time() < deadline, "the tool never ran"
            time.sleep(0.1)
    workers.kill()
    script(provider, {"reply": "Resumed: 42."})
    url = workers.start()
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {workers.stack.master_key}"}, timeout=30
    ) as client:
        done = wait(client, job["id"], timeout=40)
        assert done["status"] == "completed", done
        assert done["result"]["output_text"] == "Resumed: 42."
        assert [s["kind"] for s in done["steps"]].count("tool") == 1  # the calculator ran once
        results = [e for e in events(client, job["id"]) if e["event"] == "tool.result"]
        assert len(results) == 1
    last = provider.get("/_control/requests").json()[-1]["body"]["messages"]
    assert [m["role"] for m in last].count("tool") == 1  # the resumed step saw the saved result


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
