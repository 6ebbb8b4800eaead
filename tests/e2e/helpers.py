"""Helpers the end-to-end batch tests share (test modules never import each other)."""

from __future__ import annotations

import io
import json
import time

import openai

ENDED = {"completed", "failed", "expired", "cancelled"}


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def chat_line(custom_id: str, model: str = "cirrus-local", **body) -> dict:
    """One line of a chat batch's input file."""
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"say {custom_id}"}], **body},
    }


def upload(client: openai.OpenAI, lines: list[dict], name: str = "input.jsonl"):
    return client.files.create(file=(name, io.BytesIO(jsonl(lines))), purpose="batch")


def wait(client: openai.OpenAI, batch_id: str, until=ENDED, timeout: float = 60):
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
