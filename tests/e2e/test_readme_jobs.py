"""End to end: the README's job examples, submitted as printed, complete against the local stack.

The fake provider is not scripted here: it answers every structured-output request with an
instance it builds from the request's JSON schema, as `make dev`'s local model does. So these
tests pass only when each task's schema carries its rules (every option scored, the number of
variants, at least one action), not just the validators behind it.
"""

from __future__ import annotations

import pytest

from shared.services.analysis import TASKS
from tests.e2e.helpers import analyse_upload, api, readme_jobs, submit_job, wait

SECTION = "Jobs: agent runs and analysis"

# One input per task the README shows no example for, shaped as its task table describes.
TABLE_EXAMPLES = {
    "analyze_data": {
        "data": {"revenue": [100000, 120000, 115000, 140000], "costs": [70000, 85000, 80000, 90000]},
        "question": "Are we profitable, and is it improving?",
    },
    "generate_content": {
        "content_type": "email",
        "context": "Launch of our eco-friendly water bottle",
        "tone": "warm",
        "variants": 3,
    },
    "process_task": {"task": "Analyze Q4 sales performance", "context": "Q4 2024, three regions"},
    "summarize_events": {
        "events": [
            {"hook_event_name": "PreToolUse", "session_id": "s1", "tool_name": "Bash", "tool_use_id": "t1"},
            {"hook_event_name": "PostToolUse", "session_id": "s1", "tool_name": "Bash", "tool_use_id": "t1"},
            {"hook_event_name": "PreToolUse", "session_id": "s2", "tool_name": "Edit", "error": "denied"},
        ]
    },
}


def readme_analyses() -> list[dict]:
    return [job for job in readme_jobs(SECTION) if job["type"] == "analysis"]


def test_the_readme_shows_a_make_decision_example_and_an_agent_example():
    assert [job["task"] for job in readme_analyses()] == ["make_decision"]
    assert [job["type"] for job in readme_jobs(SECTION) if job["type"] == "agent"] == ["agent"]


@pytest.mark.parametrize("job", readme_analyses(), ids=lambda job: job["task"])
def test_each_readme_analysis_example_completes(stack, provider, job):
    with api(stack) as client:
        done = wait(client, submit_job(client, job)["id"])
    assert done["status"] == "completed", done.get("error")
    TASKS[job["task"]].result_model.model_validate(done["result"])


@pytest.mark.parametrize("task", sorted(TABLE_EXAMPLES))
def test_every_other_task_completes_with_the_local_model(stack, provider, task):
    job = {"type": "analysis", "task": task, "model": "cirrus-local", "input": TABLE_EXAMPLES[task]}
    with api(stack) as client:
        done = wait(client, submit_job(client, job)["id"])
    assert done["status"] == "completed", done.get("error")
    result = TASKS[task].result_model.model_validate(done["result"])
    if task == "generate_content":
        assert len(result.variants) == 3


def test_an_uploaded_csv_is_analysed(stack, provider):
    csv = b"month,revenue,costs\nJan,100000,70000\nFeb,120000,85000\nMar,115000,80000\n"
    done = analyse_upload(stack, "q1.csv", csv)
    assert done["status"] == "completed", done.get("error")
    result = TASKS["analyze_data"].result_model.model_validate(done["result"])
    assert result.statistics.series["revenue"].max == 120000


def test_the_readme_agent_example_completes(stack, provider):
    (job,) = [job for job in readme_jobs(SECTION) if job["type"] == "agent"]
    with api(stack) as client:
        done = wait(client, submit_job(client, job)["id"])
    assert done["status"] == "completed", done.get("error")
    assert isinstance(done["result"]["output_text"], str) and done["result"]["output_text"]
