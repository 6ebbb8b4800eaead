"""End to end: analysis input over its task's cap is a clear 400 at creation when inline, and a
failed job naming the cap when it comes from a file."""

from __future__ import annotations

from tests.e2e.helpers import analyse_upload, api


def test_inline_input_over_a_cap_is_refused_at_creation(stack):
    too_big = {"data": {f"s{i}": [123456.789] * 1000 for i in range(100)}}  # 1.2 MB as JSON
    too_many = {"events": [{"n": 1}] * 10_001}
    with api(stack) as client:
        big = client.post(
            "/v1/jobs",
            json={"type": "analysis", "task": "analyze_data", "model": "cirrus-local", "input": too_big},
        )
        many = client.post(
            "/v1/jobs",
            json={"type": "analysis", "task": "summarize_events", "model": "cirrus-local", "input": too_many},
        )
    assert big.status_code == 400, big.text
    assert "inline input is capped at 1 MiB" in big.json()["error"]["message"]
    assert many.status_code == 400, many.text
    assert many.json()["error"]["param"] == "input.events"
    assert "at most 10,000 events" in many.json()["error"]["message"]


def test_a_file_holding_more_than_the_cap_fails_the_job_naming_it(stack, provider):
    content = b"revenue\n" + b"1\n" * 100_001
    done = analyse_upload(stack, "big.csv", content)
    assert done["status"] == "failed"
    assert "analyze_data takes at most 100,000 values" in done["error"]["message"]
