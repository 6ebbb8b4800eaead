"""Analysis jobs: statistics in code, strict schemas, parsing with rules, one repair, map-reduce."""

from __future__ import annotations

import copy
import json
import math
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from shared.errors import InvalidRequestError, PayloadTooLargeError, UpstreamError
from shared.models.analysis import (
    AnalyzeDataInput,
    Content,
    DataAnalysis,
    DataInsights,
    Decision,
    DecisionInput,
    EventsInput,
    EventSummary,
    TaskInput,
    TaskPlan,
)
from shared.services import analysis
from shared.services.analysis import (
    TASKS,
    AnalysisFailed,
    AnalysisInputError,
    AnalysisOutputError,
    approx_tokens,
    build_messages,
    data_statistics,
    event_statistics,
    events_from_jsonl,
    load_file,
    parse_file,
    parse_output,
    pearson,
    plan_chunks,
    plan_reduce,
    reduce_messages,
    repair_messages,
    response_format,
    run_analysis,
    series_from_csv,
    series_from_json,
    series_stats,
)
from shared.services.analysis.schema import MAX_ENUM_NAMES
from tools.fake_provider.generate import example_for_schema

Reply = str | Callable[[list[dict[str, Any]]], str]


class ScriptedModel:
    """A fake `complete`: replies are dequeued in order (text, or a function of the messages)."""

    def __init__(self, *replies: Reply) -> None:
        self.replies: deque[Reply] = deque(replies)
        self.calls: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    async def __call__(self, messages: list[dict[str, Any]], response_format: dict[str, Any]) -> str:
        self.calls.append((copy.deepcopy(messages), response_format))
        reply = self.replies.popleft()
        return reply(messages) if callable(reply) else reply


def payload_of(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON payload of the last user message (an instruction line, a blank line, then JSON)."""
    return json.loads(messages[-1]["content"].split("\n\n", 1)[1])


INSIGHTS = {
    "summary": "Revenue grew faster than costs.",
    "trends": ["revenue rises about 10 per period"],
    "anomalies": [],
    "recommendations": ["keep costs flat"],
}
DECISION_INPUT = {
    "situation": "Competitor launched a similar product",
    "options": ["Lower prices", "Improve features", "New marketing"],
    "constraints": {"budget": 50000, "timeline": "3 months"},
}
DECISION = {
    "chosen_option": "Improve features",
    "rationale": "Differentiation lasts longer than a price cut.",
    "scores": [
        {"option": "Lower prices", "score": 4},
        {"option": "Improve features", "score": 8.5},
        {"option": "New marketing", "score": 6},
    ],
    "confidence": 0.7,
}
CONTENT_INPUT = {"content_type": "marketing", "context": "Eco-friendly water bottles", "variants": 2}
CONTENT = {"content": "Drink green.", "variants": ["Sip sustainably.", "Refill the planet."]}
# The same replies in the form the schema narrowed to their input asks for.
DECISION_KEYED = {**DECISION, "scores": {"Lower prices": 4, "Improve features": 8.5, "New marketing": 6}}
CONTENT_KEYED = {**CONTENT, "variants": {"variant_1": "Sip sustainably.", "variant_2": "Refill the planet."}}
NARROWED_REPLY = {"make_decision": DECISION_KEYED, "generate_content": CONTENT_KEYED}
TASK_INPUT = {"task": "Analyze Q4 sales performance", "context": "Q4 2024"}
TASK_PLAN = {
    "category": "financial",
    "priority": "high",
    "actions": [{"action": "Pull Q4 sales by region", "owner": "finance", "due": None}],
}
EVENTS = [
    {
        "hook_event_name": "PreToolUse",
        "session_id": "s1",
        "tool_name": "Bash",
        "tool_use_id": "t1",
        "timestamp": "2025-01-14T10:00:00Z",
        "tool_input": {"command": "ls -la"},
    },
    {
        "hook_event_name": "PostToolUse",
        "session_id": "s1",
        "tool_name": "Bash",
        "tool_use_id": "t1",
        "timestamp": "2025-01-14T10:00:02Z",
        "tool_response": {"stdout": "total 0"},
    },
    {
        "hook_event_name": "PreToolUse",
        "session_id": "s1",
        "tool_name": "Edit",
        "timestamp": "2025-01-14T10:00:05Z",
    },
    {
        "hook_event_name": "PostToolUse",
        "session_id": "s1",
        "tool_name": "Edit",
        "timestamp": "2025-01-14T10:00:05.500Z",
        "error": "file not found",
    },
    {"hook_event_name": "Stop", "session_id": "s1", "timestamp": "2025-01-14T10:01:00Z"},
    # Another producer's field names: `session`, `tool`, epoch seconds and milliseconds.
    {
        "event": "tool",
        "session": "s2",
        "tool": "Bash",
        "ts": 1736848800,
        "duration_ms": 1200,
        "status": "failed",
    },
    {"session": "s2", "tool": "Read", "ts": 1736848810000, "duration_ms": 30},
]
EVENT_INSIGHTS = {
    "summary": "Two sessions; one edit failed.",
    "sessions": [{"session": "s1", "summary": "Listed files, failed an edit."}],
    "tools": [{"tool": "Bash", "summary": "Two calls, one failed."}],
    "errors": ["Edit: file not found"],
    "notable_actions": ["ls -la"],
}
VALID = {
    "analyze_data": ({"data": {"revenue": [1, 2, 3]}}, INSIGHTS),
    "make_decision": (DECISION_INPUT, DECISION),
    "generate_content": (CONTENT_INPUT, CONTENT),
    "process_task": (TASK_INPUT, TASK_PLAN),
    "summarize_events": ({"events": EVENTS}, EVENT_INSIGHTS),
}


# ---------------------------------------------------------------------------------------------
# Statistics


def test_series_statistics_known_numbers():
    stats = series_stats([2, 4, 4, 4, 5, 5, 7, 9])

    assert (stats.count, stats.sum, stats.mean, stats.median) == (8, 40, 5, 4.5)
    assert (stats.min, stats.max, stats.first, stats.last) == (2, 9, 2, 9)
    assert stats.stdev == pytest.approx(math.sqrt(32 / 7))  # sample standard deviation
    assert stats.change == 7
    assert stats.pct_change == pytest.approx(350)
    assert stats.slope == pytest.approx(34 / 42)  # least squares over x = 0..7
    # Quartiles as numpy/pandas compute them (4 and 5.5): 9 is above 5.5 + 1.5 × 1.5, |z| is only 1.87.
    assert [(a.index, a.rules) for a in stats.anomalies] == [(7, ["iqr"])]


def test_single_point_and_zero_start_have_no_spread_trend_or_percent():
    one = series_stats([5])
    assert (one.stdev, one.slope, one.change, one.anomalies) == (None, None, 0, [])

    assert series_stats([0, 1, 2]).pct_change is None


def test_an_outlier_is_flagged_by_both_rules():
    stats = series_stats([10, 11, 9, 10, 12, 10, 11, 9, 10, 100])

    assert [(a.index, a.value, a.rules) for a in stats.anomalies] == [(9, 100, ["zscore", "iqr"])]
    assert stats.anomalies[0].z_score == pytest.approx((100 - stats.mean) / stats.stdev)
    assert stats.anomalies[0].z_score > 2.5
    assert stats.anomaly_count == 1


def test_iqr_catches_what_z_scores_cannot_in_a_short_series():
    # With 5 points no |z| can exceed (n-1)/sqrt(n) ≈ 1.79, so only the IQR rule can flag 50.
    stats = series_stats([1, 2, 3, 4, 50])

    assert [(a.index, a.rules) for a in stats.anomalies] == [(4, ["iqr"])]


def test_correlations_between_equally_long_series_only():
    stats = data_statistics(
        {
            "revenue": [1, 2, 3, 4, 5],
            "costs": [2, 4, 6, 8, 10],
            "churn": [5, 4, 3, 2, 1],
            "flat": [3, 3, 3, 3, 3],
            "short": [1, 2, 3],
        }
    )

    pairs = {(c.a, c.b): c.r for c in stats.correlations}
    assert pairs == {
        ("revenue", "costs"): pytest.approx(1),
        ("revenue", "churn"): pytest.approx(-1),
        ("costs", "churn"): pytest.approx(-1),
    }
    assert set(stats.series) == {"revenue", "costs", "churn", "flat", "short"}
    assert pearson([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(0.6)


# ---------------------------------------------------------------------------------------------
# Loading series and events from files


def test_csv_numeric_columns_by_header_with_label_columns_skipped():
    text = "\ufeffmonth,revenue,costs\nJan,100000,70000\nFeb,120000,85000\n\nMar,115000,\n"

    assert series_from_csv(text) == {"revenue": [100000, 120000, 115000], "costs": [70000, 85000]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("a,b\n", "no data rows"),
        ("month,label\nJan,x\n", "no numeric columns"),
        ("a,a\n1,2\n", "each once"),
        ("revenue,costs\n1,2\n3,abc\n", "row 3, column 'costs': 'abc' is not a number"),
        ("revenue\n1\nnan\n", "'nan' is not a number"),
        ("a,b\n1,2,3\n", "row 2 has more cells"),
    ],
)
def test_bad_csv_says_what_is_wrong(text: str, message: str):
    with pytest.raises(AnalysisInputError, match=message) as caught:
        series_from_csv(text)
    assert isinstance(caught.value, InvalidRequestError)
    assert caught.value.param == "file_id"


def test_json_series_records_and_request_bodies():
    assert series_from_json({"revenue": [1, 2.5]}) == {"revenue": [1.0, 2.5]}
    assert series_from_json({"data": {"revenue": [1]}, "question": "why?"}) == {"revenue": [1.0]}
    assert series_from_json({"data": [1, 2]}) == {"data": [1.0, 2.0]}  # a series that is called data
    records = [{"month": "Jan", "revenue": 1, "costs": 2}, {"month": "Feb", "revenue": 3, "costs": None}]
    assert series_from_json(records) == {"revenue": [1.0, 3.0], "costs": [2.0]}


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2, 3], "named numeric series or a list of records"),
        ({}, "named numeric series"),
        ({"revenue": []}, "non-empty list"),
        ({"revenue": [1, True]}, r"revenue'\[1\]: True is not a number"),
        ({"revenue": [1, "2"]}, "is not a number"),
        ([{"revenue": 1}, {"revenue": "x"}], "Record 1, field 'revenue'"),
        ([{"month": "Jan"}], "no numeric fields"),
    ],
)
def test_bad_json_series_say_what_is_wrong(obj: Any, message: str):
    with pytest.raises(AnalysisInputError, match=message):
        series_from_json(obj)


def test_events_from_jsonl_array_and_wrapper():
    lines = '{"tool_name": "Bash"}\n\n{"tool_name": "Read"}\n'
    assert events_from_jsonl(lines) == [{"tool_name": "Bash"}, {"tool_name": "Read"}]
    assert events_from_jsonl('[{"a": 1}]') == [{"a": 1}]
    assert events_from_jsonl('{"events": [{"a": 1}]}') == [{"a": 1}]

    with pytest.raises(AnalysisInputError, match="Line 2 is not valid JSON"):
        events_from_jsonl('{"a": 1}\n{"a": \n')
    with pytest.raises(AnalysisInputError, match="item 0 is not a JSON object"):
        events_from_jsonl("[1]\n")
    with pytest.raises(AnalysisInputError, match="line 2 is not a JSON object"):
        events_from_jsonl('{"a": 1}\n2\n')
    with pytest.raises(AnalysisInputError, match="empty"):
        events_from_jsonl("\n\n")


def test_parse_file_fills_the_inline_shape_and_keeps_the_file_id():
    data = parse_file("analyze_data", AnalyzeDataInput(file_id="file-1"), b"x,y\n1,2\n3,4\n")
    assert isinstance(data, AnalyzeDataInput)
    assert (data.file_id, data.data) == ("file-1", {"x": [1, 3], "y": [2, 4]})

    from_json = parse_file("analyze_data", {"file_id": "file-2"}, '{"x": [1, 2]}', filename="x.json")
    assert from_json.data == {"x": [1, 2]}

    events = parse_file("summarize_events", EventsInput(file_id="file-3"), '{"tool": "Bash"}\n')
    assert events.events == [{"tool": "Bash"}]

    with pytest.raises(AnalysisInputError, match="not valid JSON"):
        parse_file("analyze_data", {"file_id": "file-4"}, "{oops", filename="data.json")
    with pytest.raises(AnalysisInputError, match="does not take a file"):
        parse_file("process_task", TASK_INPUT, "x")
    with pytest.raises(AnalysisInputError, match="does not take a file"):
        load_file("process_task", TASK_INPUT, "x")


def test_statistics_need_the_file_loaded_first():
    with pytest.raises(AnalysisInputError, match="Load the file"):
        analysis.prepare("analyze_data", {"file_id": "file-1"})


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (AnalyzeDataInput, {}),
        (AnalyzeDataInput, {"data": {}}),
        (AnalyzeDataInput, {"data": {"x": []}}),
        (AnalyzeDataInput, {"data": {"x": [1, float("nan")]}}),
        (AnalyzeDataInput, {"data": {"x": [1]}, "extra": 1}),
        (DecisionInput, {"situation": "s", "options": ["only one"]}),
        (DecisionInput, {"situation": "s", "options": ["Go", " go "]}),
        (DecisionInput, {"situation": "s", "options": [str(i) for i in range(21)]}),
        (EventsInput, {"events": []}),
    ],
)
def test_invalid_inputs_are_refused(model: type, body: dict[str, Any]):
    with pytest.raises(ValidationError):
        model.model_validate(body)


# ---------------------------------------------------------------------------------------------
# Event statistics


def test_event_statistics_per_session_and_per_tool():
    stats = event_statistics(EVENTS)

    assert stats.events == 7
    assert stats.error_count == 2
    assert [(e.session, e.tool, e.message) for e in stats.errors] == [
        ("s1", "Edit", "file not found"),
        ("s2", "Bash", "status failed"),
    ]
    s1, s2 = stats.sessions
    assert (s1.session, s1.events, s1.tool_calls, s1.errors) == ("s1", 5, 2, 1)
    assert s1.duration_seconds == 60
    assert s1.tools == {"Bash": 1, "Edit": 1}
    assert s1.event_types == {"PreToolUse": 2, "PostToolUse": 2, "Stop": 1}
    assert (s2.session, s2.events, s2.tool_calls, s2.errors) == ("s2", 2, 2, 1)
    assert s2.started_at == datetime(2025, 1, 14, 10, 0, tzinfo=UTC)  # epoch seconds
    assert s2.duration_seconds == 10  # the second timestamp is in milliseconds

    tools = {t.tool: t for t in stats.tools}
    assert [t.tool for t in stats.tools] == ["Bash", "Edit", "Read"]  # most calls first
    bash = tools["Bash"]
    assert (bash.calls, bash.errors, bash.sessions, bash.timed_calls) == (2, 1, 2, 2)
    assert (bash.total_duration_ms, bash.mean_duration_ms, bash.max_duration_ms) == (3200, 1600, 2000)
    assert (tools["Edit"].calls, tools["Edit"].errors, tools["Edit"].max_duration_ms) == (1, 1, 500)
    assert tools["Read"].total_duration_ms == 30


def test_unpaired_and_untimed_events_still_count():
    stats = event_statistics(
        [
            {"hook_event_name": "PostToolUse", "tool_name": "Bash"},  # its Pre was never seen
            {"hook_event_name": "PreToolUse", "tool_name": "Bash", "timestamp": "not a time"},
            {"hook_event_name": "UserPromptSubmit", "prompt": "hi"},
        ]
    )

    assert stats.sessions[0].session == "(no session)"
    assert (stats.tools[0].calls, stats.tools[0].timed_calls, stats.tools[0].total_duration_ms) == (
        2,
        0,
        None,
    )
    assert (stats.started_at, stats.sessions[0].duration_seconds) == (None, None)


# ---------------------------------------------------------------------------------------------
# Strict schemas

ALLOWED_KEYWORDS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "anyOf",
    "description",
    "minItems",  # 1 only: "not empty"
}


def assert_strict(node: dict[str, Any], path: str = "$") -> None:
    assert set(node) <= ALLOWED_KEYWORDS, f"{path}: {set(node) - ALLOWED_KEYWORDS}"
    assert node.get("minItems", 1) == 1, path
    types = node["type"] if isinstance(node.get("type"), list) else [node.get("type")]
    if "object" in types:
        assert node["additionalProperties"] is False, path
        assert node["required"] == list(node["properties"]), path
        for name, sub in node["properties"].items():
            assert_strict(sub, f"{path}.{name}")
    if "array" in types:
        assert_strict(node["items"], f"{path}[]")
    for variant in node.get("anyOf", []):
        assert_strict(variant, path)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_schema_is_strict_and_accepts_a_valid_reply(task: str):
    task_input, reply = VALID[task]
    narrowed = (response_format(task, task_input), NARROWED_REPLY.get(task, reply))
    for fmt, good in ((response_format(task), reply), narrowed):
        assert fmt["type"] == "json_schema"
        assert (fmt["json_schema"]["name"], fmt["json_schema"]["strict"]) == (task, True)
        schema = fmt["json_schema"]["schema"]
        assert schema["type"] == "object"
        assert_strict(schema)
        Draft202012Validator.check_schema(schema)
        assert list(Draft202012Validator(schema).iter_errors(good)) == []
        assert list(Draft202012Validator(schema).iter_errors({**good, "extra": 1}))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_reply_shaped_by_the_narrowed_schema_alone_is_valid(task: str):
    # The local model (the fake provider) answers with the smallest instance of the schema it is
    # sent: empty lists, the first enum value, 0. Before the rules that depend on the input were in
    # the schema, make_decision got `"scores": []`, generate_content no variants and process_task
    # no actions, and every such job failed.
    task_input, _ = VALID[task]
    schema = response_format(task, task_input)["json_schema"]["schema"]

    output = parse_output(task, json.dumps(example_for_schema(schema)), task_input)

    assert isinstance(output, TASKS[task].output_model)


def schema_errors(task: str, task_input: dict[str, Any], reply: dict[str, Any]) -> list[str]:
    schema = response_format(task, task_input)["json_schema"]["schema"]
    return [error.message for error in Draft202012Validator(schema).iter_errors(reply)]


@pytest.mark.parametrize(
    ("task", "reply", "message"),
    [
        ("make_decision", {**DECISION_KEYED, "chosen_option": "Do nothing"}, "is not one of"),
        (
            "make_decision",
            {**DECISION_KEYED, "scores": {"Lower prices": 4, "Improve features": 8}},
            "'New marketing' is a required property",
        ),
        (
            "make_decision",
            {**DECISION_KEYED, "scores": {**DECISION_KEYED["scores"], "Wait": 1}},
            "Additional properties are not allowed",
        ),
        (
            "generate_content",
            {**CONTENT_KEYED, "variants": {"variant_1": "Sip sustainably."}},
            "'variant_2' is a required property",
        ),
        ("process_task", {**TASK_PLAN, "actions": []}, "should be non-empty"),
        (
            "summarize_events",
            {**EVENT_INSIGHTS, "sessions": [{"session": "s9", "summary": "?"}]},
            "'s9' is not one of ['s1', 's2']",
        ),
        (
            "summarize_events",
            {**EVENT_INSIGHTS, "tools": [{"tool": "Grep", "summary": "?"}]},
            "'Grep' is not one of ['Bash', 'Edit', 'Read']",
        ),
    ],
)
def test_narrowed_schemas_refuse_what_the_rules_refuse(task: str, reply: dict[str, Any], message: str):
    errors = schema_errors(task, VALID[task][0], reply)

    assert any(message in error for error in errors), errors
    with pytest.raises(AnalysisOutputError):
        parse_output(task, json.dumps(reply), VALID[task][0])


def test_optional_fields_are_required_and_nullable():
    action = response_format("process_task")["json_schema"]["schema"]["properties"]["actions"]["items"]
    assert action["required"] == ["action", "owner", "due"]
    assert action["properties"]["owner"]["type"] == ["string", "null"]


def test_ranges_become_words_for_the_model():
    props = response_format("make_decision")["json_schema"]["schema"]["properties"]
    assert "(≥ 0, ≤ 1)" in props["confidence"]["description"]


def test_decision_schema_enumerates_the_options_for_one_input():
    schema = response_format("make_decision", DECISION_INPUT)["json_schema"]["schema"]

    assert schema["properties"]["chosen_option"]["enum"] == DECISION_INPUT["options"]
    scores = schema["properties"]["scores"]
    assert list(scores["properties"]) == scores["required"] == DECISION_INPUT["options"]
    assert scores["additionalProperties"] is False
    generic = response_format("make_decision")["json_schema"]["schema"]["properties"]
    assert "enum" not in generic["chosen_option"]
    assert generic["scores"]["type"] == "array"  # without the options: {option, score} pairs


def test_content_schema_has_one_required_property_per_variant():
    schema = response_format("generate_content", {**CONTENT_INPUT, "variants": 3})["json_schema"]["schema"]

    variants = schema["properties"]["variants"]
    assert variants["required"] == ["variant_1", "variant_2", "variant_3"]
    assert "Exactly 3" in variants["description"]


def test_event_schema_enumerates_names_unless_there_are_too_many():
    schema = response_format("summarize_events", {"events": EVENTS})["json_schema"]["schema"]
    assert schema["properties"]["sessions"]["items"]["properties"]["session"]["enum"] == ["s1", "s2"]
    assert schema["properties"]["tools"]["items"]["properties"]["tool"]["enum"] == ["Bash", "Edit", "Read"]

    many = [{"session_id": f"s{i}", "tool_name": "Bash"} for i in range(MAX_ENUM_NAMES + 1)]
    schema = response_format("summarize_events", {"events": many})["json_schema"]["schema"]
    assert "enum" not in schema["properties"]["sessions"]["items"]["properties"]["session"]
    assert schema["properties"]["tools"]["items"]["properties"]["tool"]["enum"] == ["Bash"]


# ---------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_valid_reply_parses_into_the_output_model(task: str):
    task_input, reply = VALID[task]

    output = parse_output(task, json.dumps(reply), task_input)

    assert isinstance(output, TASKS[task].output_model)


def test_decision_scores_are_keyed_by_option_as_the_input_spells_them():
    reply = {**DECISION, "chosen_option": " improve FEATURES ", "scores": [*DECISION["scores"]]}
    reply["scores"][0] = {"option": "lower prices", "score": 4}

    decision = parse_output("make_decision", json.dumps(reply), DECISION_INPUT)

    assert isinstance(decision, Decision)
    assert decision.chosen_option == "Improve features"
    assert decision.scores == {"Lower prices": 4, "Improve features": 8.5, "New marketing": 6}


def test_replies_in_the_narrowed_form_are_read_into_the_result_shape():
    keyed = {**DECISION_KEYED, "scores": {"lower PRICES": 4, "Improve features": 8.5, "New marketing": 6}}
    decision = parse_output("make_decision", json.dumps(keyed), DECISION_INPUT)
    assert decision.scores == {"Lower prices": 4, "Improve features": 8.5, "New marketing": 6}

    content = parse_output("generate_content", json.dumps(CONTENT_KEYED), CONTENT_INPUT)
    assert content.variants == ["Sip sustainably.", "Refill the planet."]
    shuffled = {**CONTENT_KEYED, "variants": {"variant_2": "b", "variant_1": "a"}}
    assert parse_output("generate_content", json.dumps(shuffled), CONTENT_INPUT).variants == ["a", "b"]


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ({"variant_1": "a", "second": "b"}, "named variant_1, variant_2"),
        ({"variant_1": "a", "variant_3": "b"}, "no gaps"),
        ({"variant_1": "a"}, "exactly 2 items, not 1"),
    ],
)
def test_variants_objects_that_break_the_rules_are_refused(variants: dict[str, str], message: str):
    with pytest.raises(AnalysisOutputError, match=message):
        parse_output("generate_content", json.dumps({**CONTENT, "variants": variants}), CONTENT_INPUT)


def test_a_fenced_reply_is_read():
    output = parse_output("process_task", f"```json\n{json.dumps(TASK_PLAN)}\n```", TASK_INPUT)
    assert isinstance(output, TaskPlan)


@pytest.mark.parametrize(
    ("task", "reply", "message"),
    [
        (
            "make_decision",
            {**DECISION, "chosen_option": "Do nothing"},
            "'Do nothing' is not one of the options",
        ),
        ("make_decision", {**DECISION, "scores": DECISION["scores"][:2]}, r"missing \['New marketing'\]"),
        (
            "make_decision",
            {**DECISION, "scores": [*DECISION["scores"], {"option": "Wait", "score": 1}]},
            "'Wait', which is not one of the options",
        ),
        (
            "make_decision",
            {**DECISION, "scores": [*DECISION["scores"], DECISION["scores"][0]]},
            "scored twice",
        ),
        (
            "make_decision",
            {**DECISION, "confidence": 1.5},
            "confidence: Input should be less than or equal to 1",
        ),
        (
            "make_decision",
            {**DECISION, "scores": [{"option": "Lower prices", "score": 11}, *DECISION["scores"][1:]]},
            "less than or equal to 10",
        ),
        ("generate_content", {**CONTENT, "variants": ["only one"]}, "exactly 2 items, not 1"),
        (
            "generate_content",
            {**CONTENT, "content": "  "},
            "content: String should have at least 1 character",
        ),
        ("process_task", {**TASK_PLAN, "actions": []}, "actions: List should have at least 1 item"),
        ("process_task", {**TASK_PLAN, "priority": "asap"}, "priority: Input should be 'low'"),
        ("analyze_data", {k: v for k, v in INSIGHTS.items() if k != "trends"}, "trends: Field required"),
        (
            "summarize_events",
            {**EVENT_INSIGHTS, "sessions": [{"session": "s9", "summary": "?"}]},
            "session 's9' does not appear in the events",
        ),
        ("summarize_events", {**EVENT_INSIGHTS, "tools": [{"tool": "Grep", "summary": "?"}]}, "tool 'Grep'"),
    ],
)
def test_replies_that_break_the_rules_are_refused_with_the_reason(
    task: str, reply: dict[str, Any], message: str
):
    with pytest.raises(AnalysisOutputError, match=message):
        parse_output(task, json.dumps(reply), VALID[task][0])


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty"), ("{oops", "not valid JSON: Expecting property name"), ("[1]", "a JSON object, not list")],
)
def test_replies_that_are_not_a_json_object_are_refused(text: str, message: str):
    with pytest.raises(AnalysisOutputError, match=message):
        parse_output("process_task", text, TASK_INPUT)


def test_repair_messages_append_the_bad_reply_and_the_error():
    messages = build_messages("process_task", TASK_INPUT)

    repaired = repair_messages("process_task", messages, "{oops", "The reply is not valid JSON.")

    assert repaired[: len(messages)] == messages
    assert repaired[-2] == {"role": "assistant", "content": "{oops"}
    assert repaired[-1]["role"] == "user"
    assert "The reply is not valid JSON." in repaired[-1]["content"]
    assert "corrected JSON object only" in repaired[-1]["content"]


# ---------------------------------------------------------------------------------------------
# Running: one call, repair, failure


@pytest.mark.parametrize("task", sorted(TASKS))
async def test_one_valid_reply_is_one_call(task: str):
    task_input, reply = VALID[task]
    model = ScriptedModel(json.dumps(reply))

    result = await run_analysis(task, task_input, model)

    assert (result.calls, result.repaired, result.chunks) == (1, False, 1)
    assert isinstance(result.output, TASKS[task].result_model)
    messages, fmt = model.calls[0]
    assert fmt == response_format(task, task_input)
    assert [m["role"] for m in messages] == ["system", "user"]


async def test_analyze_data_result_has_statistics_from_code_and_the_models_reading():
    data = {"revenue": [100000, 120000, 115000], "costs": [70000, 85000, 80000]}
    model = ScriptedModel(json.dumps(INSIGHTS))

    result = await run_analysis("analyze_data", {"data": data, "question": "Are we profitable?"}, model)

    assert isinstance(result.output, DataAnalysis)
    assert result.output.statistics == data_statistics(data)
    assert result.output.summary == INSIGHTS["summary"]
    sent = payload_of(model.calls[0][0])
    assert sent["question"] == "Are we profitable?"
    assert sent["statistics"]["series"]["revenue"]["mean"] == pytest.approx(111667, rel=1e-5)
    assert sent["values"] == data  # short series are shown point by point


async def test_summarize_events_result_has_statistics_and_digest_in_the_prompt():
    model = ScriptedModel(json.dumps(EVENT_INSIGHTS))

    result = await run_analysis("summarize_events", {"events": EVENTS}, model)

    assert isinstance(result.output, EventSummary)
    assert result.output.statistics == event_statistics(EVENTS)
    sent = payload_of(model.calls[0][0])
    assert sent["events"][0] == {
        "at": "2025-01-14T10:00:00+00:00",
        "session": "s1",
        "event": "PreToolUse",
        "tool": "Bash",
        "detail": '{"command": "ls -la"}',
    }
    assert sent["statistics"]["error_count"] == 2


async def test_an_invalid_reply_is_repaired_once():
    bad = json.dumps({**DECISION, "chosen_option": "Do nothing"})
    model = ScriptedModel(bad, json.dumps(DECISION))

    result = await run_analysis("make_decision", DECISION_INPUT, model)

    assert (result.calls, result.repaired) == (2, True)
    assert isinstance(result.output, Decision)
    assert result.output.chosen_option == "Improve features"
    first, second = model.calls
    assert second[0][: len(first[0])] == first[0]
    assert second[0][-2] == {"role": "assistant", "content": bad}
    assert "'Do nothing' is not one of the options" in second[0][-1]["content"]
    assert second[1] == first[1]  # the same response_format


async def test_a_second_invalid_reply_fails_and_keeps_the_raw_output():
    model = ScriptedModel("not json", '{"content": "x", "variants": ["a", "b", "c"]}')

    with pytest.raises(AnalysisFailed) as caught:
        await run_analysis("generate_content", CONTENT_INPUT, model)

    assert caught.value.raw_output == '{"content": "x", "variants": ["a", "b", "c"]}'
    assert "exactly 2 items, not 3" in caught.value.error
    assert isinstance(caught.value, UpstreamError)
    assert caught.value.code == "invalid_model_output"
    assert len(model.calls) == 2


def test_statistics_and_replies_survive_a_json_checkpoint():
    inp = {"events": EVENTS}
    prepared = analysis.prepare("summarize_events", inp)
    stored = json.loads(prepared.model_dump_json())

    assert build_messages("summarize_events", inp, stored) == build_messages(
        "summarize_events", inp, prepared
    )
    reply = parse_output("summarize_events", json.dumps(EVENT_INSIGHTS), inp)
    result = analysis.combine("summarize_events", json.loads(reply.model_dump_json()), stored)
    assert result == analysis.combine("summarize_events", reply, prepared)
    assert isinstance(result, EventSummary)


# ---------------------------------------------------------------------------------------------
# Map-reduce


async def test_an_input_within_the_budget_is_one_call():
    model = ScriptedModel(json.dumps(TASK_PLAN))

    result = await run_analysis("process_task", TASK_INPUT, model, max_input_tokens=10_000)

    assert (result.calls, result.chunks) == (1, 1)


def many_series(count: int) -> dict[str, list[float]]:
    # Different lengths, so no pair correlates and every chunk's prompt grows only with its series.
    return {f"series_{i:02d}": [float(i + j) for j in range(5 + i)] for i in range(count)}


async def test_a_large_data_input_is_mapped_in_chunks_and_reduced():
    data = many_series(12)
    inp = AnalyzeDataInput(data=data, question="Which series grow fastest?")
    first_four = inp.model_copy(update={"data": dict(list(data.items())[:4])})
    budget = approx_tokens(build_messages("analyze_data", first_four))

    chunks = plan_chunks("analyze_data", inp, budget, approx_tokens)

    assert [len(chunk.data) for chunk in chunks] == [4, 3, 3, 2]  # later series are longer
    assert [name for chunk in chunks for name in chunk.data] == list(data)  # every series once, in order
    assert all(approx_tokens(build_messages("analyze_data", chunk)) <= budget for chunk in chunks)
    assert all(chunk.question == inp.question for chunk in chunks)

    part = {**INSIGHTS, "summary": "part"}
    model = ScriptedModel(*[json.dumps(part)] * len(chunks), json.dumps(INSIGHTS))
    result = await run_analysis(
        "analyze_data", inp, model, max_input_tokens=budget, count_tokens=approx_tokens
    )

    assert (result.calls, result.chunks, result.repaired) == (len(chunks) + 1, len(chunks), False)
    assert result.output.statistics == data_statistics(data)  # over the whole input, not the chunks
    assert result.output.summary == INSIGHTS["summary"]
    map_sent = [set(payload_of(messages)["statistics"]["series"]) for messages, _ in model.calls[:-1]]
    assert map_sent == [set(chunk.data) for chunk in chunks]
    reduce_sent = payload_of(model.calls[-1][0])
    assert reduce_sent["parts"] == [part] * len(chunks)
    assert reduce_sent["question"] == inp.question
    assert "combining partial results" in model.calls[-1][0][0]["content"]


async def test_partial_results_too_many_for_one_reduce_are_reduced_in_rounds():
    data = many_series(12)
    budget = approx_tokens(build_messages("analyze_data", {"data": dict(list(data.items())[:3])}))
    model = ScriptedModel(*[json.dumps(INSIGHTS)] * 20)

    result = await run_analysis("analyze_data", {"data": data}, model, max_input_tokens=budget)

    reduces = [m for m, _ in model.calls if "combining partial results" in m[0]["content"]]
    assert result.chunks == 6
    assert len(reduces) >= 2
    assert result.calls == result.chunks + len(reduces) == len(model.calls)
    assert all(approx_tokens(messages) <= budget for messages, _ in model.calls)
    assert len(payload_of(reduces[-1])["parts"]) < result.chunks  # the last round merged reduced parts


def events_for(session: str, count: int) -> list[dict[str, Any]]:
    return [
        {"session_id": session, "tool_name": "Bash", "hook_event_name": "PreToolUse", "tool_input": {"n": i}}
        for i in range(count)
    ]


def test_event_chunks_keep_sessions_whole_when_they_can():
    events = events_for("a", 4) + events_for("b", 4) + events_for("c", 4)
    one_and_a_half = approx_tokens(build_messages("summarize_events", {"events": events[:6]}))

    chunks = plan_chunks("summarize_events", {"events": events}, one_and_a_half, approx_tokens)

    sessions = [{e["session_id"] for e in chunk.events} for chunk in chunks]
    assert sessions == [{"a"}, {"b"}, {"c"}]


def test_a_session_too_big_for_one_chunk_is_split():
    events = events_for("a", 12) + events_for("b", 2)
    budget = approx_tokens(build_messages("summarize_events", {"events": events[:5]}))

    chunks = plan_chunks("summarize_events", {"events": events}, budget, approx_tokens)

    assert len(chunks) > 2
    assert [e for chunk in chunks for e in chunk.events] == events
    assert all(approx_tokens(build_messages("summarize_events", c)) <= budget for c in chunks)


async def test_events_map_reduce_validates_names_per_chunk():
    events = events_for("a", 4) + events_for("b", 4)
    budget = approx_tokens(build_messages("summarize_events", {"events": events[:5]}))

    def note_on_the_chunk_session(messages: list[dict[str, Any]]) -> str:
        session = payload_of(messages)["statistics"]["sessions"][0]["session"]
        return json.dumps(
            {**EVENT_INSIGHTS, "sessions": [{"session": session, "summary": "ran"}], "tools": []}
        )

    merged = {
        **EVENT_INSIGHTS,
        "sessions": [{"session": "a", "summary": "x"}, {"session": "b", "summary": "y"}],
    }
    model = ScriptedModel(note_on_the_chunk_session, note_on_the_chunk_session, json.dumps(merged))

    result = await run_analysis(
        "summarize_events", {"events": events}, model, max_input_tokens=budget, count_tokens=approx_tokens
    )

    assert (result.calls, result.chunks) == (3, 2)
    assert [n.session for n in result.output.sessions] == ["a", "b"]
    # Each call's schema names the sessions its reply is checked against: the chunk's, then all.
    enums = [fmt["json_schema"]["schema"]["properties"]["sessions"]["items"] for _, fmt in model.calls]
    assert [e["properties"]["session"]["enum"] for e in enums] == [["a"], ["b"], ["a", "b"]]
    assert payload_of(model.calls[-1][0])["overall"]["sessions"] == 2


def test_reduce_is_planned_in_groups_that_fit():
    parts = [DataInsights(**{**INSIGHTS, "summary": f"part {i} " + "x" * 400}) for i in range(5)]
    budget = approx_tokens(reduce_messages("analyze_data", parts[:2]))

    groups = plan_reduce("analyze_data", parts, budget, approx_tokens)

    assert [len(g) for g in groups] == [2, 2, 1]
    with pytest.raises(PayloadTooLargeError, match="Two partial results"):
        plan_reduce("analyze_data", parts, budget - 10, approx_tokens)


def test_tasks_that_cannot_be_split_are_too_large():
    with pytest.raises(PayloadTooLargeError, match="make_decision input is too large"):
        plan_chunks("make_decision", DECISION_INPUT, 10, approx_tokens)


def test_an_input_that_fits_is_one_chunk():
    assert plan_chunks("process_task", TASK_INPUT, 10_000, approx_tokens) == [TaskInput(**TASK_INPUT)]


def test_unknown_task_is_an_input_error():
    with pytest.raises(AnalysisInputError, match="Unknown analysis task 'guess'"):
        response_format("guess")


def test_rules_that_need_the_input_are_skipped_without_it():
    # A stored result is re-read without its input: the variant count cannot be checked then.
    assert Content.model_validate({**CONTENT, "variants": ["one"]}).variants == ["one"]
