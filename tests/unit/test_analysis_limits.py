"""Analysis inputs: large inputs parsed off the event loop.

Issue 13: a 12 MiB file was parsed synchronously in the worker, blocking every other request on it
for 11 s.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from shared.config import ModelConfig
from shared.models.jobs import JobCreate
from shared.services.analysis import (
    TASKS,
    AnalysisInputError,
    UploadedFile,
    approx_tokens,
    load_file,
    run_analysis,
)
from shared.services.auth import MASTER
from shared.services.files import FileService
from shared.services.jobs import AnalysisRunner, JobService
from shared.services.model_catalog import ModelCatalog
from shared.services.tools import ToolSettings
from tests import factories
from tests.fakes import InMemoryBlobStore, InMemoryDocumentStore, InMemoryQueueStore

MIB = 1024 * 1024
INSIGHTS = {"summary": "Fine.", "trends": [], "anomalies": [], "recommendations": ["none"]}


def wide_csv(rows: int, columns: int = 10, label_chars: int = 250) -> bytes:
    """A CSV export of `rows` × `columns` numbers plus a long label column: megabytes, few values."""
    header = "note," + ",".join(f"c{i}" for i in range(columns)) + "\n"
    label = "x" * label_chars
    body = "".join(
        f"{label}{r}," + ",".join(f"{r * 7 + i}.25" for i in range(columns)) + "\n" for r in range(rows)
    )
    return (header + body).encode()


class Ticker:
    """A coroutine that counts how often the event loop lets it run."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)


# ---------------------------------------------------------------------------------------------
# Off the event loop


async def test_a_multi_mib_file_is_parsed_while_the_event_loop_keeps_ticking():
    content = wide_csv(rows=10_000)
    assert len(content) > 2 * MIB
    loop_thread = threading.get_ident()
    ticker = Ticker()
    ticking = asyncio.create_task(ticker.run())
    await asyncio.sleep(0)
    ticks_when_asked: list[int] = []
    counted_in: set[int] = set()

    async def model(messages: list[dict[str, Any]], response_format: dict[str, Any]) -> str:
        ticks_when_asked.append(ticker.ticks)
        return json.dumps(INSIGHTS)

    def count_tokens(messages: list[dict[str, Any]]) -> int:
        counted_in.add(threading.get_ident())
        return approx_tokens(messages)

    upload = load_file("analyze_data", {"file_id": "file-1"}, content, filename="export.csv")
    assert isinstance(upload, UploadedFile)  # read, not parsed: that happens in run_analysis
    before = ticker.ticks
    try:
        result = await run_analysis(
            "analyze_data", upload, model, max_input_tokens=10**9, count_tokens=count_tokens
        )
    finally:
        ticking.cancel()

    assert result.output.statistics.series["c9"].count == 10_000
    # Parsing, statistics and planning ran while the loop went on serving other coroutines; parsed
    # on the loop (as before), the ticker did not run once between the start and the model call.
    assert ticks_when_asked[0] > before
    assert counted_in and loop_thread not in counted_in


async def test_a_file_that_is_not_valid_is_refused_by_run_analysis():
    upload = load_file("analyze_data", {"file_id": "file-1"}, "{oops", filename="data.json")

    async def no_model(messages: list[dict[str, Any]], response_format: dict[str, Any]) -> str:
        raise AssertionError("no model call is expected")

    with pytest.raises(AnalysisInputError, match="not valid JSON"):
        await run_analysis("analyze_data", upload, no_model)


# ---------------------------------------------------------------------------------------------
# Through the job runner


class Jobs:
    """A job service with analysis jobs, on in-memory stores; the model answers from `answers`."""

    def __init__(self) -> None:
        documents = InMemoryDocumentStore()
        self.files = FileService(documents, InMemoryBlobStore(), "uploads")
        self.answers: list[str] = []

        async def chat(request: Any, call: Any) -> tuple[dict[str, Any], float]:
            return factories.completion_dict(self.answers.pop(0)), 0.0

        async def owner(key_id: str):
            return MASTER

        async def max_input_tokens(model: str) -> int | None:
            return 100_000

        models = ModelConfig.model_validate(
            {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x"}}]}
        )
        self.service = JobService(
            documents,
            InMemoryQueueStore(),
            self.files,
            ModelCatalog(models, created=0),
            queue="jobs",
            chat=chat,
            owner=owner,
            tool_settings=ToolSettings(),
            webhook_secret=b"s" * 32,
            analysis=AnalysisRunner(self.files, max_input_tokens, max_file_bytes=200 * MIB),
        )

    async def run(self, task: str, input: dict[str, Any]) -> dict[str, Any]:
        spec = JobCreate(type="analysis", model="m", task=task, input=input)  # type: ignore[arg-type]
        created = await self.service.create(MASTER, spec)
        await self.service.handle({"v": 1, "job_id": created["id"]})
        return await self.service.get(MASTER, created["id"])

    async def upload(self, name: str, content: bytes) -> str:
        return (await self.files.create(MASTER, filename=name, purpose="user_data", content=content)).id


async def test_an_uploaded_file_is_analysed_through_the_job_runner():
    jobs = Jobs()
    jobs.answers = [json.dumps(INSIGHTS)]
    file_id = await jobs.upload("export.csv", wide_csv(rows=2_000))

    job = await jobs.run("analyze_data", {"file_id": file_id})

    assert job["status"] == "completed", job.get("error")
    result = TASKS["analyze_data"].result_model.model_validate(job["result"])
    assert result.statistics.series["c0"].count == 2_000
