"""Helpers for end-to-end tests of jobs: submit over HTTP, wait for the end, read README examples."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx

ENDED = {"completed", "failed", "cancelled", "incomplete"}
README = Path(__file__).resolve().parents[2] / "README.md"


def api(stack: Any, key: str | None = None) -> httpx.Client:
    """Cirrus's HTTP API as `key` (the master key by default)."""
    return httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {key or stack.master_key}"}, timeout=30
    )


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
