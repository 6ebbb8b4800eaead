"""Shared helpers of the end-to-end tests: import them from here, never from another test file."""

from __future__ import annotations

import base64
import contextlib
import json
import time

import httpx
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

# --- jobs: the API, the fake provider's script and the jobs queue ------------------------------

ENDED = {"completed", "failed", "cancelled", "incomplete"}


def api(stack, key: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {key or stack.master_key}"}, timeout=30
    )


def script(provider, *turns: dict) -> None:
    """Queue the model's next answers: {"tool_calls": [...]} or {"reply": "..."}."""
    for turn in turns:
        provider.post("/_control/enqueue", json={"behaviour": turn, "times": 1}).raise_for_status()


def calc(expression: str, **behaviour) -> dict:
    return {"tool_calls": [{"name": "calculator", "arguments": {"expression": expression}}], **behaviour}


def submit(client: httpx.Client, **job) -> dict:
    response = client.post("/v1/jobs", json={"model": "cirrus-local", **job})
    assert response.status_code == 202, response.text
    return response.json()


def wait(client: httpx.Client, job_id: str, timeout: float = 30) -> dict:
    deadline = time.time() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ENDED:
            return job
        assert time.time() < deadline, f"job still {job['status']}"
        time.sleep(0.2)


def events(client: httpx.Client, job_id: str, last: int | None = None) -> list[dict]:
    headers = {"Last-Event-ID": str(last)} if last is not None else {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        text = "".join(response.iter_text())
    found = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        found.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return found


def send_raw(stack, queue: str, text: str) -> None:
    client = QueueClient.from_connection_string(stack.env["AzureWebJobsStorage"], queue)
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    client.send_message(base64.b64encode(text.encode()).decode())


def receive(stack, queue: str, timeout: float = 20) -> dict:
    client = QueueClient.from_connection_string(stack.env["AzureWebJobsStorage"], queue)
    deadline = time.time() + timeout
    while time.time() < deadline:
        for message in client.receive_messages(max_messages=1):
            client.delete_message(message)
            return json.loads(base64.b64decode(message.content))
        time.sleep(0.3)
    raise AssertionError(f"nothing arrived on {queue}")
