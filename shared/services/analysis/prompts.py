"""The prompts: one system prompt per task, and the user message that carries the input as JSON.

Floats are shortened to 6 significant digits and short series are shown point by point; long
series and event logs reach the model as the statistics computed in code plus, for events, a
digest of each event.
"""

from __future__ import annotations

import json
from typing import Any

from shared.models.analysis import (
    AnalyzeDataInput,
    ContentInput,
    DataStatistics,
    DecisionInput,
    EventsInput,
    EventStatistics,
    TaskInput,
)
from shared.services.analysis.statistics import Event, brief, first_field, normalise_event

Messages = list[dict[str, Any]]

RAW_VALUES_LIMIT = 100  # series this short are shown to the model point by point


def digest(ev: Event) -> dict[str, Any]:
    """An event in a few fields, for the prompt: what ran, where, and what it was given."""
    detail = first_field(ev.raw, "tool_input", "input", "command", "prompt", "message", "summary")
    line = {
        "at": ev.at.isoformat() if ev.at else None,
        "session": ev.session,
        "event": ev.kind,
        "tool": ev.tool,
        "detail": brief(detail, 160) if detail is not None else None,
        "error": ev.error,
    }
    return {k: v for k, v in line.items() if v is not None}


def _compact(value: Any) -> Any:
    """Floats to 6 significant digits: the model needs the figure, not 0.30000000000000004."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def _json(value: Any) -> str:
    return json.dumps(_compact(value), ensure_ascii=False)


def chat_messages(system: str, instruction: str, payload: dict[str, Any]) -> Messages:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"{instruction}\n\n{_json(payload)}"},
    ]


JSON_ONLY = "Reply with one JSON object that matches the response schema, and nothing else."

SYSTEM_ANALYZE = (
    "You are a careful data analyst. You are given statistics computed exactly in code for named "
    "numeric series (and the raw values of short series): per-series count, sum, mean, median, min, "
    "max, sample standard deviation, first/last value, change, percent change, least-squares slope "
    "per step, anomalies (|z| > 2.5 or outside 1.5 × IQR) and Pearson correlations. Interpret them; "
    "do not recompute or contradict them, and quote figures from them. Answer the question if one is "
    f"given. {JSON_ONLY}"
)
SYSTEM_DECIDE = (
    "You are a decision analyst. Weigh every option against the situation and the constraints. Score "
    "each option from 0 (worst) to 10 (best), choose the one you recommend, copying its text exactly, "
    f"explain why, and give your confidence from 0 to 1. {JSON_ONLY}"
)
SYSTEM_CONTENT = (
    "You are a professional copywriter. Write the requested content for the context given, in the "
    "requested tone, ready to use without editing. Besides the main content, write exactly the "
    f"requested number of alternative variants, each distinct in angle or wording. {JSON_ONLY}"
)
SYSTEM_TASK = (
    "You are an operations assistant. Triage the business task: give it a short category (such as "
    "financial, marketing, sales, operations, engineering, legal, hr or other), a priority (low, "
    "medium, high or urgent) and at least one concrete action, each with an owner (a role or team, or "
    f"null) and a due date or relative deadline (or null). {JSON_ONLY}"
)
SYSTEM_EVENTS = (
    "You summarise the activity of coding agents from their hook events. You are given statistics "
    "computed exactly in code (per session and per tool: counts, durations, errors) and a digest of "
    "the events. Use the figures as given. Name sessions and tools exactly as they appear in the "
    "statistics. Point out failures and their likely causes, and actions a reviewer should look at "
    f"(destructive commands, changes to configuration or credentials, repeated retries). {JSON_ONLY}"
)
REDUCE_NOTE = (
    "You are now combining partial results, each produced from one part of a larger input. Merge "
    "them into one result with the same JSON schema: keep what matters most, remove duplicates, "
    "reconcile contradictions in favour of the figures, and add nothing that is not in the parts."
)


def analyze_messages(inp: AnalyzeDataInput, stats: DataStatistics) -> Messages:
    data = inp.data or {}
    payload = {
        "question": inp.question,
        "statistics": stats.model_dump(mode="json"),
        "values": {name: v for name, v in data.items() if len(v) <= RAW_VALUES_LIMIT},
    }
    return chat_messages(SYSTEM_ANALYZE, "Analyse these series.", payload)


def decide_messages(inp: DecisionInput, _: None) -> Messages:
    return chat_messages(SYSTEM_DECIDE, "Decide between the options.", inp.model_dump(mode="json"))


def content_messages(inp: ContentInput, _: None) -> Messages:
    instruction = f"Write {inp.content_type} content and exactly {inp.variants} variants."
    return chat_messages(SYSTEM_CONTENT, instruction, inp.model_dump(mode="json", exclude={"variants"}))


def task_messages(inp: TaskInput, _: None) -> Messages:
    return chat_messages(SYSTEM_TASK, "Triage this task.", inp.model_dump(mode="json"))


def events_messages(inp: EventsInput, stats: EventStatistics) -> Messages:
    payload = {
        "statistics": stats.model_dump(mode="json", exclude_none=True),
        "events": [digest(normalise_event(raw)) for raw in inp.events or []],
    }
    return chat_messages(SYSTEM_EVENTS, "Summarise these events.", payload)


def analyze_overview(stats: DataStatistics) -> dict[str, Any]:
    strongest = sorted(stats.correlations, key=lambda c: abs(c.r), reverse=True)[:20]
    return {"series": len(stats.series), "strongest_correlations": [c.model_dump() for c in strongest]}


def events_overview(stats: EventStatistics) -> dict[str, Any]:
    return {
        "events": stats.events,
        "sessions": len(stats.sessions),
        "errors": stats.error_count,
        "busiest_tools": [t.model_dump(include={"tool", "calls", "errors"}) for t in stats.tools[:20]],
    }
