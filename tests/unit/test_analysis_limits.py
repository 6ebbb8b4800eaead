"""Analysis inputs: size caps per task, and large inputs parsed off the event loop.

Issue 13: a 12 MiB file was parsed synchronously in the worker, blocking every other request on it
for 11 s, and nothing capped how much one job could make a worker parse.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from pydantic import ValidationError

from shared.config import ModelConfig
from shared.errors import InvalidRequestError
from shared.models.analysis import (
    MAX_DATA_VALUES,
    MAX_EVENTS,
    MAX_INLINE_BYTES,
    MAX_TEXT_INPUT_BYTES,
    AnalyzeDataInput,
    DecisionInput,
    EventsInput,
    TaskInput,
)
from shared.models.jobs import JobCreate
from shared.services.analysis import (
    TASKS,
    AnalysisInputError,
    UploadedFile,
    approx_tokens,
    load_file,
    max_file_bytes,
    parse_file,
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
# Caps on uploaded files (checked when the file is loaded, before it is parsed)


@pytest.mark.parametrize(
    ("task", "cap", "message"),
    [
        (
            "analyze_data",
            4 * MIB,
            r"The file is 4\.00 MiB \(4,194,305 bytes\); "
            r"analyze_data reads files of at most 4 MiB \(4,194,304 bytes\)",
        ),
        ("summarize_events", 8 * MIB, r"summarize_events reads files of at most 8 MiB"),
    ],
)
def test_a_file_over_its_tasks_cap_is_refused_before_parsing(task: str, cap: int, message: str):
    assert max_file_bytes(task) == cap
    too_big = b"1\n" * (cap // 2) + b"1"

    with pytest.raises(AnalysisInputError, match=message) as caught:
        load_file(task, {"file_id": "file-1"}, too_big)
    assert caught.value.param == "file_id"
    with pytest.raises(AnalysisInputError, match=message):
        parse_file(task, {"file_id": "file-1"}, too_big)
    load_file(task, {"file_id": "file-1"}, too_big[:cap])  # at the cap is fine


def test_what_a_file_holds_is_capped_like_inline_input():
    values = b"revenue\n" + b"1\n" * (MAX_DATA_VALUES + 1)
    with pytest.raises(AnalysisInputError, match="at most 100,000 values in all series together"):
        parse_file("analyze_data", {"file_id": "file-1"}, values)

    events = b'{"tool_name": "Bash"}\n' * (MAX_EVENTS + 1)
    with pytest.raises(AnalysisInputError, match="at most 10,000 events; this input has 10,001"):
        parse_file("summarize_events", {"file_id": "file-1"}, events)


# ---------------------------------------------------------------------------------------------
# Caps on inline input (checked by the input models, so at job creation)


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        (AnalyzeDataInput, {"data": {"x": [1.0] * (MAX_DATA_VALUES + 1)}}, "at most 100,000 values"),
        (
            AnalyzeDataInput,
            {"data": {f"s{i}": [123456.789] * 1000 for i in range(100)}},  # 100,000 values, 1.2 MB
            r"inline input is capped at 1 MiB \(1,048,576 bytes\); upload larger data as a file",
        ),
        (EventsInput, {"events": [{"n": 1}] * (MAX_EVENTS + 1)}, "at most 10,000 events"),
        (EventsInput, {"events": [{"detail": "x" * 200_000}] * 6}, "inline input is capped at 1 MiB"),
        (TaskInput, {"task": "x" * MAX_TEXT_INPUT_BYTES}, "capped at 256 KiB"),
        (
            DecisionInput,
            {"situation": "x" * MAX_TEXT_INPUT_BYTES, "options": ["a", "b"]},
            "capped at 256 KiB",
        ),
    ],
)
def test_inline_input_over_a_cap_is_refused(model: type, body: dict[str, Any], message: str):
    with pytest.raises(ValidationError, match=message):
        model.model_validate(body)


def test_inline_input_at_the_caps_is_accepted():
    AnalyzeDataInput.model_validate({"data": {"x": [1.0] * MAX_DATA_VALUES}})
    EventsInput.model_validate({"events": [{"n": 1}] * MAX_EVENTS})
    assert MAX_INLINE_BYTES == MIB
    # A file's content is capped by the file's own byte cap, not the inline one.
    parsed = parse_file("summarize_events", {"file_id": "f"}, b'{"detail": "' + b"x" * 2 * MIB + b'"}\n')
    assert len(parsed.events or []) == 1


# ---------------------------------------------------------------------------------------------
# Through the job runner: a 400 at creation, or a failed job naming the cap


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


async def test_an_inline_input_over_its_cap_is_a_400_at_creation():
    jobs = Jobs()

    with pytest.raises(InvalidRequestError, match="at most 10,000 events") as caught:
        await jobs.run("summarize_events", {"events": [{"n": 1}] * (MAX_EVENTS + 1)})

    assert caught.value.status == 400
    assert caught.value.param == "input.events"


async def test_a_file_over_its_cap_fails_the_job_naming_the_cap():
    jobs = Jobs()
    file_id = await jobs.upload("big.csv", b"revenue\n" + b"1\n" * (2 * MIB))

    job = await jobs.run("analyze_data", {"file_id": file_id})

    assert job["status"] == "failed"
    assert "analyze_data reads files of at most 4 MiB" in job["error"]["message"]
    assert not jobs.answers  # and no model was asked


async def test_a_file_with_too_many_events_fails_the_job_naming_the_cap():
    jobs = Jobs()
    file_id = await jobs.upload("hooks.jsonl", b'{"tool_name": "Bash"}\n' * (MAX_EVENTS + 1))

    job = await jobs.run("summarize_events", {"file_id": file_id})

    assert job["status"] == "failed"
    assert "summarize_events takes at most 10,000 events" in job["error"]["message"]


async def test_an_uploaded_file_is_analysed_through_the_job_runner():
    jobs = Jobs()
    jobs.answers = [json.dumps(INSIGHTS)]
    file_id = await jobs.upload("export.csv", wide_csv(rows=2_000))

    job = await jobs.run("analyze_data", {"file_id": file_id})

    assert job["status"] == "completed", job.get("error")
    result = TASKS["analyze_data"].result_model.model_validate(job["result"])
    assert result.statistics.series["c0"].count == 2_000
