"""Shared helpers of the end-to-end tests: import them from here, never from another test file."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import yaml
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

README = Path(__file__).resolve().parents[2] / "README.md"
MODEL_FILE = Path(__file__).parent / "model_list.yaml"


def model_names() -> list[str]:
    """The public model names the e2e model file serves, in its order."""
    return list(dict.fromkeys(m["model_name"] for m in yaml.safe_load(MODEL_FILE.read_text())["model_list"]))


def host_log_with(stack: Any, text: str, timeout: float = 10) -> str:
    """The local host's log once it holds `text`. The app's log lines come from the worker process
    as RpcLog messages on the gRPC stream, so one can land after the HTTP response it preceded."""
    deadline = time.monotonic() + timeout
    while text not in (log := stack.log.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"{text!r} is not in the host log after {timeout:.0f}s"
        time.sleep(0.1)
    return log


# --- jobs: the API, the fake provider's script and the jobs queue ------------------------------

ENDED = {"completed", "failed", "cancelled", "incomplete"}


def api(stack: Any, key: str | None = None) -> httpx.Client:
    """Cirrus's HTTP API as `key` (the master key by default)."""
    return httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {key or stack.master_key}"}, timeout=30
    )


def script(provider: httpx.Client, *turns: dict) -> None:
    """Queue the model's next answers: {"tool_calls": [...]} or {"reply": "..."}."""
    for turn in turns:
        provider.post("/_control/enqueue", json={"behaviour": turn, "times": 1}).raise_for_status()


def calc(expression: str, **behaviour: Any) -> dict:
    return {"tool_calls": [{"name": "calculator", "arguments": {"expression": expression}}], **behaviour}


def submit(client: httpx.Client, **job: Any) -> dict:
    """POST /v1/jobs for the local model, with `job`'s fields; the job as created (202)."""
    return submit_job(client, {"model": "cirrus-local", **job})


def submit_job(client: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/jobs exactly as given; the job as created (202)."""
    response = client.post("/v1/jobs", json=job)
    assert response.status_code == 202, response.text
    return response.json()


def wait(client: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """The job once it has ended."""
    deadline = time.time() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ENDED:
            return job
        assert time.time() < deadline, f"job still {job['status']}"
        time.sleep(0.2)


def analyse_upload(stack: Any, name: str, content: bytes) -> dict[str, Any]:
    """An `analyze_data` job over an uploaded file, run to its end."""
    upload = stack.client().files.create(file=(name, io.BytesIO(content)), purpose="user_data")
    job = {
        "type": "analysis",
        "task": "analyze_data",
        "model": "cirrus-local",
        "input": {"file_id": upload.id},
    }
    with api(stack) as client:
        return wait(client, submit_job(client, job)["id"])


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


def send_raw(stack: Any, queue: str, text: str) -> None:
    client = make_queue(stack, queue)
    client.send_message(base64.b64encode(text.encode()).decode())


def make_queue(stack: Any, queue: str) -> QueueClient:
    """The queue, created if need be (as a submitter creates its own reply queue)."""
    client = QueueClient.from_connection_string(stack.env["AzureWebJobsStorage"], queue)
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    return client


def receive(stack: Any, queue: str, timeout: float = 20) -> dict:
    client = QueueClient.from_connection_string(stack.env["AzureWebJobsStorage"], queue)
    deadline = time.time() + timeout
    while time.time() < deadline:
        # A job shows as ended before its reply is sent, and the queue may only exist from then on.
        with contextlib.suppress(ResourceNotFoundError):
            for message in client.receive_messages(max_messages=1):
                client.delete_message(message)
                return json.loads(base64.b64decode(message.content))
        time.sleep(0.3)
    raise AssertionError(f"nothing arrived on {queue}")


# --- batches: input files, waiting for the end, results -------------------------------------------

BATCH_ENDED = {"completed", "failed", "expired", "cancelled"}


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def chat_line(custom_id: str, model: str = "cirrus-local", **body: Any) -> dict:
    """One line of a chat batch's input file."""
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"say {custom_id}"}], **body},
    }


def upload(client: openai.OpenAI, lines: list[dict], name: str = "input.jsonl") -> Any:
    return client.files.create(file=(name, io.BytesIO(jsonl(lines))), purpose="batch")


def wait_batch(
    client: openai.OpenAI, batch_id: str, until: set[str] = BATCH_ENDED, timeout: float = 60
) -> Any:
    """The batch once its status is in `until` (it ends, by default)."""
    deadline = time.time() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        assert time.time() < deadline, f"batch still {batch.status}: {batch.request_counts}"
        time.sleep(0.3)


def results(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    """The lines of an output or error file (none if there is no file)."""
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines() if line]


# --- the README's examples ---------------------------------------------------------------------------


def readme_section(title: str) -> str:
    """The README's text from the heading `title` to the next heading of the same or a higher level."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^(#+) {re.escape(title)}\n", text, re.MULTILINE)
    assert match, f"README has no section {title!r}"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


def readme_jobs(title: str) -> list[dict[str, Any]]:
    """Every job body in a README section: ```json blocks with a `type`, and `curl … /v1/jobs -d '…'`."""
    section = readme_section(title)
    jobs = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]
    for command in re.findall(r"```bash\n(.*?)```", section, re.DOTALL):
        if "/v1/jobs" in command:
            jobs += [json.loads(body) for body in re.findall(r"-d '(\{.*?\})'", command, re.DOTALL)]
    return [job for job in jobs if isinstance(job, dict) and "type" in job]


# --- Anthropic's Messages API ------------------------------------------------------------------------


def anthropic_client(stack: Any, key: str | None = None, **options: Any) -> anthropic.Anthropic:
    """The official anthropic SDK against the local host, validating every answer strictly against
    its own types. The key goes in `x-api-key`, as Claude Code sends ANTHROPIC_API_KEY (this SDK
    sends an `api_key` as `Authorization: Bearer`, which Cirrus takes too)."""
    return anthropic.Anthropic(
        base_url=stack.base_url,
        default_headers={"x-api-key": key or stack.master_key},
        max_retries=0,
        _strict_response_validation=True,
        **options,
    )


def sse_events(text: str) -> list[tuple[str, dict]]:
    """(event name, data) of each event of a typed stream (Anthropic's, Responses') read as text."""
    found = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        found.append((fields.get("event", ""), json.loads(fields["data"])))
    return found


# --- responses: raw event streams and waiting for a background response ---------------------------

RESPONSE_ENDED = {"completed", "failed", "cancelled", "incomplete"}


def read_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """A typed event stream as (the `event:` line's name, the data), in order."""
    return sse_events(response.read().decode())


def wait_response(client: openai.OpenAI, response_id: str, until: set[str] = RESPONSE_ENDED) -> Any:
    """The response once its status is in `until` (it has ended, by default)."""
    deadline = time.time() + 60
    while True:
        response = client.responses.retrieve(response_id)
        if response.status in until:
            return response
        assert time.time() < deadline, f"response still {response.status}"
        time.sleep(0.2)


# --- the Responses API ----------------------------------------------------------------------------

# A function tool in the Responses API's shape.
WEATHER_FUNCTION = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


def sdk_body(model: Any) -> dict[str, Any]:
    """What the server sent, as the SDK parsed it (for checking against OpenAI's schemas)."""
    return model.model_dump(mode="json", exclude_unset=True, by_alias=True)


def provider_requests(provider: httpx.Client) -> list[dict[str, Any]]:
    """Every request the fake provider received, oldest first (its path, headers and body)."""
    return provider.get("/_control/requests").json()


def wait_records(http: httpx.Client, headers: dict[str, str], key_id: str, count: int) -> list[dict]:
    """A key's (or Entra caller's) usage records once `count` have been written, else what there is
    after 20 s: records are written after the answer."""
    deadline = time.time() + 20
    while True:
        page = http.get("/v1/usage/records", params={"key_id": key_id}, headers=headers).json()
        if len(page["data"]) >= count or time.time() > deadline:
            return page["data"]
        time.sleep(0.3)
