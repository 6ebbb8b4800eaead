"""Analysis jobs: typed tasks answered with strict structured output, with the numbers computed in code.

The module is pure: no I/O and no model calls. The job runner loads files, counts tokens and makes
each model call itself, so it can checkpoint every step; `run_analysis` strings the same steps
together for tests and simple callers:

    prepare (statistics in code)
      → one call, or, when the prompt exceeds the context: one map call per chunk, then reduce calls
      → parse_output (JSON + pydantic, including rules that need the input)
      → on failure, exactly one repair call (repair_messages); a second failure raises AnalysisFailed
      → combine (statistics + the model's fields) for analyze_data and summarize_events

Why statistics in code: models are unreliable at arithmetic over long series, and a result that
quotes a wrong mean is worse than no result. The model gets the exact figures and interprets them.
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import json
import math
import statistics
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from shared.errors import InvalidRequestError, PayloadTooLargeError, UpstreamError
from shared.models.analysis import (
    AnalyzeDataInput,
    Anomaly,
    Content,
    ContentInput,
    Correlation,
    DataAnalysis,
    DataInsights,
    DataStatistics,
    Decision,
    DecisionInput,
    EventError,
    EventInsights,
    EventsInput,
    EventStatistics,
    EventSummary,
    SeriesStats,
    SessionStats,
    TaskInput,
    TaskPlan,
    ToolStats,
)
from shared.models.validation import param_path

Messages = list[dict[str, Any]]
CountTokens = Callable[[Messages], int]
Complete = Callable[[Messages, dict[str, Any]], Awaitable[str]]

Z_LIMIT = 2.5
IQR_FACTOR = 1.5
MIN_POINTS_FOR_ANOMALIES = 4  # below this, neither rule says anything useful
MAX_ANOMALIES = 20  # per series, the most extreme; `anomaly_count` keeps the total
MAX_ERRORS = 50  # event errors kept in the statistics; `error_count` keeps the total
RAW_VALUES_LIMIT = 100  # series this short are shown to the model point by point
MAX_REPAIR_ECHO = 20_000  # characters of a bad reply echoed back in the repair turn
NO_SESSION = "(no session)"


class AnalysisInputError(InvalidRequestError):
    """The data cannot be analysed as given (unreadable file, no numeric columns, ...)."""


class AnalysisOutputError(Exception):
    """The model's reply is not valid JSON or breaks the task's schema or rules; the message says how."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AnalysisFailed(UpstreamError):
    """The reply was still invalid after the one repair attempt; `raw_output` keeps the last reply."""

    code = "invalid_model_output"

    def __init__(self, *, raw_output: str, error: str) -> None:
        super().__init__(f"The model's output was invalid after one repair attempt: {error}")
        self.raw_output = raw_output
        self.error = error


# ---------------------------------------------------------------------------------------------
# Loading uploaded files into the inline shapes


def _number(cell: str) -> float | None:
    try:
        value = float(cell.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def series_from_csv(text: str) -> dict[str, list[float]]:
    """Numeric columns of a CSV with a header row, by header name.

    A column whose first value is not a number is a label column (dates, names) and is skipped;
    in a numeric column every non-blank cell must be a number. Blank cells are missing values.
    """
    rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text.lstrip("\ufeff"))), 1) if any(row)]
    if not rows:
        raise AnalysisInputError("The CSV file is empty.", param="file_id")
    header = [name.strip() for name in rows[0][1]]
    if not all(header) or len(set(header)) != len(header):
        raise AnalysisInputError("The CSV header must name every column, each once.", param="file_id")
    if len(rows) < 2:
        raise AnalysisInputError("The CSV file has a header but no data rows.", param="file_id")
    for line, row in rows[1:]:
        if len(row) > len(header):
            raise AnalysisInputError(f"CSV row {line} has more cells than the header.", param="file_id")
    series = {}
    for col, name in enumerate(header):
        cells = [(line, row[col].strip() if col < len(row) else "") for line, row in rows[1:]]
        if (values := _numeric_column(name, [c for c in cells if c[1]])) is not None:
            series[name] = values
    if not series:
        raise AnalysisInputError("The CSV file has no numeric columns.", param="file_id")
    return series


def _numeric_column(name: str, cells: list[tuple[int, str]]) -> list[float] | None:
    if not cells or _number(cells[0][1]) is None:
        return None
    values = []
    for line, cell in cells:
        if (value := _number(cell)) is None:
            raise AnalysisInputError(
                f"CSV row {line}, column {name!r}: {cell!r} is not a number.", param="file_id"
            )
        values.append(value)
    return values


def _json_number(value: Any) -> float | None:
    # bool is an int in Python; in data it is a mistake, not 0 or 1.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def series_from_json(obj: Any) -> dict[str, list[float]]:
    """Named series from `{"name": [numbers]}`, `{"data": {...}}` or a list of records (one per row)."""
    if isinstance(obj, dict) and (isinstance(obj.get("data"), dict) or _is_records(obj.get("data"))):
        obj = obj["data"]  # the body of an analyze_data request, uploaded as a file
    if _is_records(obj):
        return _series_from_records(obj)
    if not isinstance(obj, dict) or not obj:
        raise AnalysisInputError(
            "Expected a JSON object of named numeric series or a list of records.", param="file_id"
        )
    series = {}
    for name, values in obj.items():
        if not isinstance(values, list) or not values:
            raise AnalysisInputError(f"Series {name!r} must be a non-empty list of numbers.", param="file_id")
        series[name] = [_series_point(name, i, v) for i, v in enumerate(values)]
    return series


def _is_records(obj: Any) -> bool:
    return isinstance(obj, list) and bool(obj) and all(isinstance(row, dict) for row in obj)


def _series_point(name: str, index: int, value: Any) -> float:
    if (number := _json_number(value)) is None:
        raise AnalysisInputError(f"Series {name!r}[{index}]: {value!r} is not a number.", param="file_id")
    return number


def _series_from_records(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    names = list(dict.fromkeys(key for row in rows for key in row))
    series = {}
    for name in names:
        cells = [(i, row[name]) for i, row in enumerate(rows) if row.get(name) is not None]
        if not cells or _json_number(cells[0][1]) is None:
            continue  # a label field, like a CSV label column
        series[name] = [_record_point(name, i, v) for i, v in cells]
    if not series:
        raise AnalysisInputError("The JSON records have no numeric fields.", param="file_id")
    return series


def _record_point(name: str, row: int, value: Any) -> float:
    if (number := _json_number(value)) is None:
        raise AnalysisInputError(f"Record {row}, field {name!r}: {value!r} is not a number.", param="file_id")
    return number


def events_from_jsonl(text: str) -> list[dict[str, Any]]:
    """Events from JSON Lines (one object a line); a JSON array or `{"events": [...]}` is accepted too."""
    stripped = text.lstrip("\ufeff").strip()
    try:
        whole = json.loads(stripped)  # JSON Lines with more than one line fail here, at line 2
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and isinstance(whole.get("events"), list):
        whole = whole["events"]
    if isinstance(whole, list):
        return [_event_object(event, f"item {i}") for i, event in enumerate(whole)]
    events = []
    for line_no, line in enumerate(stripped.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AnalysisInputError(
                f"Line {line_no} is not valid JSON: {exc.msg}.", param="file_id"
            ) from None
        events.append(_event_object(event, f"line {line_no}"))
    if not events:
        raise AnalysisInputError("The events file is empty.", param="file_id")
    return events


def _event_object(event: Any, where: str) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise AnalysisInputError(f"Events {where} is not a JSON object.", param="file_id")
    return event


def load_file(
    task: str, input: BaseModel | dict[str, Any], content: str | bytes, *, filename: str | None = None
) -> BaseModel:
    """`input` with its uploaded file's content parsed into `data` (CSV/JSON) or `events` (JSONL)."""
    spec = _spec(task)
    text = content.decode("utf-8-sig", errors="replace") if isinstance(content, bytes) else content
    current = _as_input(spec, input).model_dump()
    if task == "analyze_data":
        as_json = (filename or "").lower().endswith(".json") or text.lstrip("\ufeff \r\n\t")[:1] in ("{", "[")
        current["data"] = series_from_json(_json_document(text)) if as_json else series_from_csv(text)
    elif task == "summarize_events":
        current["events"] = events_from_jsonl(text)
    else:
        raise AnalysisInputError(f"Task {task!r} does not take a file.", param="file_id")
    try:
        return spec.input_model.model_validate(current)
    except ValidationError as exc:
        raise AnalysisInputError(
            f"The file's content is not valid input: {_describe(exc)}", param="file_id"
        ) from None


def _json_document(text: str) -> Any:
    try:
        return json.loads(text.lstrip("\ufeff"))
    except json.JSONDecodeError as exc:
        raise AnalysisInputError(
            f"The file is not valid JSON: {exc.msg} at line {exc.lineno}.", param="file_id"
        ) from None


# ---------------------------------------------------------------------------------------------
# Statistics for analyze_data


def series_stats(values: Sequence[float]) -> SeriesStats:
    """Descriptive statistics, trend and anomalies of one series."""
    n = len(values)
    mean = math.fsum(values) / n
    stdev = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    first, last = values[0], values[-1]
    anomalies = _anomalies(values, mean, stdev)
    median = statistics.median(values)
    extreme = sorted(anomalies, key=lambda a: abs(a.value - median), reverse=True)[:MAX_ANOMALIES]
    return SeriesStats(
        count=n,
        sum=math.fsum(values),
        mean=mean,
        median=median,
        min=min(values),
        max=max(values),
        stdev=stdev,
        first=first,
        last=last,
        change=last - first,
        pct_change=(last - first) / abs(first) * 100 if first else None,
        slope=_slope(values),
        anomaly_count=len(anomalies),
        anomalies=sorted(extreme, key=lambda a: a.index),
    )


def _slope(values: Sequence[float]) -> float | None:
    n = len(values)
    if n < 2:
        return None
    x_mean, y_mean = (n - 1) / 2, math.fsum(values) / n
    sxy = math.fsum((x - x_mean) * (y - y_mean) for x, y in enumerate(values))
    sxx = math.fsum((x - x_mean) ** 2 for x in range(n))
    return sxy / sxx


def _anomalies(values: Sequence[float], mean: float, stdev: float | None) -> list[Anomaly]:
    if len(values) < MIN_POINTS_FOR_ANOMALIES or stdev is None:
        return []
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    low, high = q1 - IQR_FACTOR * (q3 - q1), q3 + IQR_FACTOR * (q3 - q1)
    found = []
    for index, value in enumerate(values):
        z = (value - mean) / stdev if stdev > 0 else None
        rules: list[Literal["zscore", "iqr"]] = []
        if z is not None and abs(z) > Z_LIMIT:
            rules.append("zscore")
        if not low <= value <= high:
            rules.append("iqr")
        if rules:
            found.append(Anomaly(index=index, value=value, z_score=z, rules=rules))
    return found


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r of two equally long series; None when either is constant or too short."""
    n = len(xs)
    if n != len(ys) or n < 3:
        return None
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    syy = math.fsum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def data_statistics(data: dict[str, list[float]]) -> DataStatistics:
    """Per-series statistics and the correlations between every pair of equally long series."""
    names = list(data)
    correlations = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if (r := pearson(data[a], data[b])) is not None:
                correlations.append(Correlation(a=a, b=b, n=len(data[a]), r=r))
    return DataStatistics(
        series={name: series_stats(v) for name, v in data.items()}, correlations=correlations
    )


# ---------------------------------------------------------------------------------------------
# Statistics for summarize_events (coding-agent hook events and similar)

PRE_TOOL = frozenset({"PreToolUse"})
POST_TOOL = frozenset({"PostToolUse", "PostToolUseFailure"})
FAILED_STATUSES = frozenset({"error", "failed", "failure", "fail"})


@dataclass
class Event:
    """One event with its fields found under whichever alias the producer used."""

    session: str
    tool: str | None
    kind: str | None
    at: datetime | None
    error: str | None
    duration_ms: float | None
    call_id: str | None
    raw: dict[str, Any]


@dataclass
class _Call:
    session: str
    tool: str
    started: datetime | None
    ended: datetime | None = None
    duration_ms: float | None = None
    error: str | None = None


def _first(raw: dict[str, Any], *names: str) -> Any:
    return next((raw[name] for name in names if raw.get(name) not in (None, "")), None)


def _brief(value: Any, limit: int = 300) -> str:
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        value = value["message"]
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_timestamp(value: Any) -> datetime | None:
    """ISO 8601, or epoch seconds / milliseconds, as an aware UTC datetime; None if unreadable."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return parse_timestamp(_number(value))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    seconds = value / 1000 if abs(value) > 1e11 else value  # 1e11 s is the year 5138: this is ms
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _error_of(raw: dict[str, Any]) -> str | None:
    if raw.get("error") not in (None, False, "", {}, []):
        return "error" if raw["error"] is True else _brief(raw["error"])
    status = raw.get("status")
    if isinstance(status, str) and status.lower() in FAILED_STATUSES:
        return f"status {status}"
    response = raw.get("tool_response")
    if isinstance(response, dict) and (response.get("is_error") or response.get("error")):
        return _brief(response.get("error") or response.get("content") or "the tool reported an error")
    if raw.get("hook_event_name") == "PostToolUseFailure":
        return "the tool call failed"
    return None


def normalise_event(raw: dict[str, Any]) -> Event:
    """Read an event's fields under the names different producers use (`tool_name`/`tool`, ...)."""
    duration = _first(raw, "duration_ms")
    return Event(
        session=str(_first(raw, "session_id", "session") or NO_SESSION),
        tool=_opt_str(_first(raw, "tool_name", "tool")),
        kind=_opt_str(_first(raw, "hook_event_name", "event", "event_type", "type")),
        at=parse_timestamp(_first(raw, "timestamp", "ts", "time", "created_at")),
        error=_error_of(raw),
        duration_ms=_json_number(duration),
        call_id=_opt_str(_first(raw, "tool_use_id", "call_id")),
        raw=raw,
    )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _tool_calls(events: list[Event]) -> list[_Call]:
    """One call per tool invocation: a Pre event and its Post (by tool_use_id, else in order) make one."""
    calls: list[_Call] = []
    open_by_id: dict[str, _Call] = {}
    open_by_key: dict[tuple[str, str], deque[_Call]] = defaultdict(deque)
    for ev in events:
        if ev.tool is None:
            continue
        key = (ev.session, ev.tool)
        if ev.kind in PRE_TOOL:
            call = _Call(ev.session, ev.tool, started=ev.at, duration_ms=ev.duration_ms, error=ev.error)
            calls.append(call)
            if ev.call_id:
                open_by_id[ev.call_id] = call
            else:
                open_by_key[key].append(call)
            continue
        call = None
        if ev.kind in POST_TOOL:
            call = open_by_id.pop(ev.call_id, None) if ev.call_id else None
            if call is None and open_by_key[key]:
                call = open_by_key[key].popleft()
        if call is None:
            call = _Call(ev.session, ev.tool, started=ev.at if ev.kind not in POST_TOOL else None)
            calls.append(call)
        _finish_call(call, ev)
    return calls


def _finish_call(call: _Call, ev: Event) -> None:
    call.ended = ev.at
    call.error = call.error or ev.error
    if call.duration_ms is None:
        call.duration_ms = ev.duration_ms
    if call.duration_ms is None and call.started and call.ended and ev.kind in POST_TOOL:
        call.duration_ms = max(0.0, (call.ended - call.started).total_seconds() * 1000)


def event_statistics(raw_events: list[dict[str, Any]]) -> EventStatistics:
    """Counts, durations and errors per session and per tool."""
    events = [normalise_event(raw) for raw in raw_events]
    calls = _tool_calls(events)
    times = [ev.at for ev in events if ev.at]
    errors = [
        EventError(session=ev.session, tool=ev.tool, timestamp=ev.at, message=ev.error)
        for ev in events
        if ev.error
    ]
    return EventStatistics(
        events=len(events),
        started_at=min(times, default=None),
        ended_at=max(times, default=None),
        sessions=_session_stats(events, calls),
        tools=_tool_stats(calls),
        error_count=len(errors),
        errors=errors[:MAX_ERRORS],
    )


def _session_stats(events: list[Event], calls: list[_Call]) -> list[SessionStats]:
    by_session: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        by_session[ev.session].append(ev)
    calls_by_session: dict[str, list[_Call]] = defaultdict(list)
    for call in calls:
        calls_by_session[call.session].append(call)
    result = []
    for session, evs in by_session.items():
        session_calls = calls_by_session[session]
        times = [ev.at for ev in evs if ev.at]
        start, end = min(times, default=None), max(times, default=None)
        result.append(
            SessionStats(
                session=session,
                events=len(evs),
                tool_calls=len(session_calls),
                errors=sum(1 for ev in evs if ev.error),
                started_at=start,
                ended_at=end,
                duration_seconds=(end - start).total_seconds() if start and end else None,
                tools=dict(Counter(c.tool for c in session_calls).most_common()),
                event_types=dict(Counter(ev.kind for ev in evs if ev.kind).most_common()),
            )
        )
    return result


def _tool_stats(calls: list[_Call]) -> list[ToolStats]:
    by_tool: dict[str, list[_Call]] = defaultdict(list)
    for call in calls:
        by_tool[call.tool].append(call)
    result = []
    for tool, tool_calls in sorted(by_tool.items(), key=lambda item: (-len(item[1]), item[0])):
        durations = [c.duration_ms for c in tool_calls if c.duration_ms is not None]
        result.append(
            ToolStats(
                tool=tool,
                calls=len(tool_calls),
                errors=sum(1 for c in tool_calls if c.error),
                sessions=len({c.session for c in tool_calls}),
                timed_calls=len(durations),
                total_duration_ms=math.fsum(durations) if durations else None,
                mean_duration_ms=math.fsum(durations) / len(durations) if durations else None,
                max_duration_ms=max(durations, default=None),
            )
        )
    return result


def _digest(ev: Event) -> dict[str, Any]:
    """An event in a few fields, for the prompt: what ran, where, and what it was given."""
    detail = _first(ev.raw, "tool_input", "input", "command", "prompt", "message", "summary")
    line = {
        "at": ev.at.isoformat() if ev.at else None,
        "session": ev.session,
        "event": ev.kind,
        "tool": ev.tool,
        "detail": _brief(detail, 160) if detail is not None else None,
        "error": ev.error,
    }
    return {k: v for k, v in line.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# Prompts


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


def _messages(system: str, instruction: str, payload: dict[str, Any]) -> Messages:
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


def _analyze_messages(inp: AnalyzeDataInput, stats: DataStatistics) -> Messages:
    data = inp.data or {}
    payload = {
        "question": inp.question,
        "statistics": stats.model_dump(mode="json"),
        "values": {name: v for name, v in data.items() if len(v) <= RAW_VALUES_LIMIT},
    }
    return _messages(SYSTEM_ANALYZE, "Analyse these series.", payload)


def _decide_messages(inp: DecisionInput, _: None) -> Messages:
    return _messages(SYSTEM_DECIDE, "Decide between the options.", inp.model_dump(mode="json"))


def _content_messages(inp: ContentInput, _: None) -> Messages:
    instruction = f"Write {inp.content_type} content and exactly {inp.variants} variants."
    return _messages(SYSTEM_CONTENT, instruction, inp.model_dump(mode="json", exclude={"variants"}))


def _task_messages(inp: TaskInput, _: None) -> Messages:
    return _messages(SYSTEM_TASK, "Triage this task.", inp.model_dump(mode="json"))


def _events_messages(inp: EventsInput, stats: EventStatistics) -> Messages:
    payload = {
        "statistics": stats.model_dump(mode="json", exclude_none=True),
        "events": [_digest(normalise_event(raw)) for raw in inp.events or []],
    }
    return _messages(SYSTEM_EVENTS, "Summarise these events.", payload)


def _analyze_overview(stats: DataStatistics) -> dict[str, Any]:
    strongest = sorted(stats.correlations, key=lambda c: abs(c.r), reverse=True)[:20]
    return {"series": len(stats.series), "strongest_correlations": [c.model_dump() for c in strongest]}


def _events_overview(stats: EventStatistics) -> dict[str, Any]:
    return {
        "events": stats.events,
        "sessions": len(stats.sessions),
        "errors": stats.error_count,
        "busiest_tools": [t.model_dump(include={"tool", "calls", "errors"}) for t in stats.tools[:20]],
    }


# ---------------------------------------------------------------------------------------------
# Tasks


def _event_names(inp: EventsInput) -> dict[str, Any]:
    events = [normalise_event(raw) for raw in inp.events or []]
    return {
        "sessions": list(dict.fromkeys(ev.session for ev in events)),
        "tools": list(dict.fromkeys(ev.tool for ev in events if ev.tool)),
    }


def _decision_schema(schema: dict[str, Any], inp: DecisionInput) -> None:
    # An enum is the one portable way to make the model copy an option exactly.
    schema["properties"]["chosen_option"]["enum"] = list(inp.options)
    schema["properties"]["scores"]["items"]["properties"]["option"]["enum"] = list(inp.options)


def _content_schema(schema: dict[str, Any], inp: ContentInput) -> None:
    variants = schema["properties"]["variants"]
    variants["description"] += f" Exactly {inp.variants}."


def _series_units(inp: AnalyzeDataInput) -> list[tuple[str, Any]]:
    return [(name, (name, values)) for name, values in (inp.data or {}).items()]


def _with_series(inp: AnalyzeDataInput, units: list[Any]) -> AnalyzeDataInput:
    return inp.model_copy(update={"data": dict(units)})


def _event_units(inp: EventsInput) -> list[tuple[str, Any]]:
    # Grouped by session (in order of first appearance), so a chunk holds whole sessions if it can.
    by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for raw in inp.events or []:
        by_session[normalise_event(raw).session].append(raw)
    return [(session, raw) for session, raws in by_session.items() for raw in raws]


def _with_events(inp: EventsInput, units: list[Any]) -> EventsInput:
    return inp.model_copy(update={"events": list(units)})


@dataclass(frozen=True)
class Splitter:
    """How a task's input splits into units for the map step, and how units make an input again."""

    units: Callable[[Any], list[tuple[str, Any]]]  # (group, unit); a chunk keeps groups whole if it can
    rebuild: Callable[[Any, list[Any]], BaseModel]
    unit_name: str


@dataclass(frozen=True)
class TaskSpec:
    """Everything one task type needs; the functions are pure."""

    name: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]  # what the model writes (its strict schema is the response_format)
    result_model: type[BaseModel]  # what the job returns
    system: str
    build_messages: Callable[[Any, Any], Messages]
    prepare: Callable[[Any], BaseModel] | None = None  # computed in code, before any model call
    prepared_model: type[BaseModel] | None = None  # what `prepare` returns, to reload a checkpoint
    combine: Callable[[Any, Any], BaseModel] | None = None  # model reply + prepared → result
    overview: Callable[[Any], dict[str, Any]] | None = None  # prepared → context for reduce calls
    context: Callable[[Any], dict[str, Any]] | None = None  # input → what the reply's rules check against
    tighten: Callable[[dict[str, Any], Any], None] | None = None  # narrows the schema for one input
    splitter: Splitter | None = None  # None: the input cannot be split for map-reduce


def _prepare_series(inp: AnalyzeDataInput) -> DataStatistics:
    if inp.data is None:
        raise AnalysisInputError(
            "Load the file into `data` (load_file) before analysing it.", param="file_id"
        )
    return data_statistics(inp.data)


def _prepare_events(inp: EventsInput) -> EventStatistics:
    if inp.events is None:
        raise AnalysisInputError(
            "Load the file into `events` (load_file) before summarising it.", param="file_id"
        )
    return event_statistics(inp.events)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="analyze_data",
            input_model=AnalyzeDataInput,
            output_model=DataInsights,
            result_model=DataAnalysis,
            system=SYSTEM_ANALYZE,
            build_messages=_analyze_messages,
            prepare=_prepare_series,
            prepared_model=DataStatistics,
            combine=lambda out, stats: DataAnalysis(**out.model_dump(), statistics=stats),
            overview=_analyze_overview,
            splitter=Splitter(_series_units, _with_series, "series"),
        ),
        TaskSpec(
            name="make_decision",
            input_model=DecisionInput,
            output_model=Decision,
            result_model=Decision,
            system=SYSTEM_DECIDE,
            build_messages=_decide_messages,
            context=lambda inp: {"options": list(inp.options)},
            tighten=_decision_schema,
        ),
        TaskSpec(
            name="generate_content",
            input_model=ContentInput,
            output_model=Content,
            result_model=Content,
            system=SYSTEM_CONTENT,
            build_messages=_content_messages,
            context=lambda inp: {"variants": inp.variants},
            tighten=_content_schema,
        ),
        TaskSpec(
            name="process_task",
            input_model=TaskInput,
            output_model=TaskPlan,
            result_model=TaskPlan,
            system=SYSTEM_TASK,
            build_messages=_task_messages,
        ),
        TaskSpec(
            name="summarize_events",
            input_model=EventsInput,
            output_model=EventInsights,
            result_model=EventSummary,
            system=SYSTEM_EVENTS,
            build_messages=_events_messages,
            prepare=_prepare_events,
            prepared_model=EventStatistics,
            combine=lambda out, stats: EventSummary(**out.model_dump(), statistics=stats),
            overview=_events_overview,
            context=_event_names,
            splitter=Splitter(_event_units, _with_events, "event"),
        ),
    )
}


def _spec(task: str) -> TaskSpec:
    try:
        return TASKS[task]
    except KeyError:
        raise AnalysisInputError(
            f"Unknown analysis task {task!r}; expected one of {sorted(TASKS)}.", param="task"
        ) from None


def _as_input(spec: TaskSpec, input: BaseModel | dict[str, Any]) -> BaseModel:
    if isinstance(input, spec.input_model):
        return input
    data = input.model_dump() if isinstance(input, BaseModel) else input
    try:
        return spec.input_model.model_validate(data)
    except ValidationError as exc:
        raise AnalysisInputError(f"Invalid input for {spec.name}: {_describe(exc)}", param="input") from None


def _as_prepared(spec: TaskSpec, prepared: BaseModel | dict[str, Any] | None) -> BaseModel | None:
    # A runner that checkpoints `prepare`'s result as JSON hands it back as a dict.
    if isinstance(prepared, dict) and spec.prepared_model:
        return spec.prepared_model.model_validate(prepared)
    return prepared if isinstance(prepared, BaseModel) else None


def _as_output(spec: TaskSpec, output: BaseModel | dict[str, Any]) -> BaseModel:
    return output if isinstance(output, BaseModel) else spec.output_model.model_validate(output)


def prepare(task: str, input: BaseModel | dict[str, Any]) -> BaseModel | None:
    """What code computes before the model is asked (statistics); None for tasks with nothing to compute."""
    spec = _spec(task)
    return spec.prepare(_as_input(spec, input)) if spec.prepare else None


def build_messages(
    task: str, input: BaseModel | dict[str, Any], prepared: BaseModel | dict[str, Any] | None = None
) -> Messages:
    """The chat messages for one call over `input` (prepared from it here unless given)."""
    spec = _spec(task)
    inp = _as_input(spec, input)
    ready = _as_prepared(spec, prepared)
    if ready is None and spec.prepare:
        ready = spec.prepare(inp)
    return spec.build_messages(inp, ready)


def combine(
    task: str, output: BaseModel | dict[str, Any], prepared: BaseModel | dict[str, Any] | None
) -> BaseModel:
    """The job's result: the model's reply, with the code-computed statistics where the task has them."""
    spec = _spec(task)
    reply = _as_output(spec, output)
    return spec.combine(reply, _as_prepared(spec, prepared)) if spec.combine else reply


# ---------------------------------------------------------------------------------------------
# Strict schemas

_FOLDED = {
    "minimum": "≥ {}",
    "exclusiveMinimum": "> {}",
    "maximum": "≤ {}",
    "exclusiveMaximum": "< {}",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "minItems": "at least {} item(s)",
    "maxItems": "at most {} item(s)",
    "pattern": "matching {}",
}


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema in the subset every structured-output provider accepts in strict mode.

    Every property is required (optional ones are nullable), objects forbid extra properties, `$ref`s
    are inlined, and range/length keywords — rejected by some providers — become words in the
    description; pydantic still enforces them in parse_output.
    """
    root = model.model_json_schema(mode="validation")
    # Model docstrings are written for developers; only field descriptions are meant for the model.
    defs = {name: _without_description(d) for name, d in root.pop("$defs", {}).items()}
    return _strict(_without_description(root), defs)


def _without_description(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k != "description"}


def _strict(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        node = {**defs[node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    if isinstance(node.get("additionalProperties"), dict):
        raise TypeError("a free-form object cannot be strict; give it a fixed schema (WithJsonSchema)")
    out: dict[str, Any] = {}
    notes = []
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _strict(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _strict(value, defs)
        elif key == "anyOf":
            out[key] = [_strict(variant, defs) for variant in value]
        elif key in ("type", "enum", "description"):
            out[key] = value
    for key, words in _FOLDED.items():
        if key in node:
            notes.append("non-empty" if (key, node[key]) == ("minLength", 1) else words.format(node[key]))
    if out.get("type") == "object" or "properties" in out:
        out.setdefault("type", "object")
        out["required"] = list(out.setdefault("properties", {}))
        out["additionalProperties"] = False
    if notes:
        out["description"] = " ".join(filter(None, [out.get("description"), f"({', '.join(notes)})"]))
    return _collapse_nullable(out)


def _collapse_nullable(node: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [{type: string}, {type: null}]` → `type: [string, null]`, the form every provider reads."""
    variants = node.get("anyOf")
    if variants and all(set(v) == {"type"} and isinstance(v["type"], str) for v in variants):
        node = {k: v for k, v in node.items() if k != "anyOf"}
        node["type"] = [v["type"] for v in variants]
    return node


@functools.cache
def _base_schema(task: str) -> dict[str, Any]:
    return strict_schema(_spec(task).output_model)


def response_format(task: str, input: BaseModel | dict[str, Any] | None = None) -> dict[str, Any]:
    """The `json_schema` response_format for `task`, narrowed to `input` when given (option enums)."""
    spec = _spec(task)
    schema = copy.deepcopy(_base_schema(task))
    if input is not None and spec.tighten:
        spec.tighten(schema, _as_input(spec, input))
    return {"type": "json_schema", "json_schema": {"name": task, "schema": schema, "strict": True}}


# ---------------------------------------------------------------------------------------------
# Parsing and the one repair


def _describe(exc: ValidationError, limit: int = 8) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:limit]:
        where = param_path(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _strip_fence(text: str) -> str:
    # Models without structured-output support often wrap JSON in a Markdown fence.
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped[3:-3]
        first_line, _, rest = stripped.partition("\n")
        stripped = rest if first_line.strip().isalpha() or not first_line.strip() else stripped
    return stripped.strip()


def parse_output(task: str, text: str, input: BaseModel | dict[str, Any]) -> BaseModel:
    """The model's reply as the task's output model, checked against `input` (options, counts, names)."""
    spec = _spec(task)
    if not isinstance(text, str) or not text.strip():
        raise AnalysisOutputError("The reply was empty; expected a JSON object.")
    try:
        data = json.loads(_strip_fence(text))
    except json.JSONDecodeError as exc:
        raise AnalysisOutputError(
            f"The reply is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}."
        ) from None
    if not isinstance(data, dict):
        raise AnalysisOutputError(f"The reply must be a JSON object, not {type(data).__name__}.")
    context = spec.context(_as_input(spec, input)) if spec.context else None
    try:
        return spec.output_model.model_validate(data, context=context)
    except ValidationError as exc:
        raise AnalysisOutputError(f"The reply does not match the schema: {_describe(exc)}") from None


def repair_messages(task: str, messages: Messages, bad_text: str, error: str) -> Messages:
    """The one repair turn: the conversation, the bad reply, and what was wrong with it."""
    _spec(task)
    echoed = bad_text if len(bad_text) <= MAX_REPAIR_ECHO else bad_text[:MAX_REPAIR_ECHO] + "…"
    return [
        *messages,
        {"role": "assistant", "content": echoed},
        {
            "role": "user",
            "content": f"That reply is invalid. {error}\nReply again with the corrected JSON object only.",
        },
    ]


# ---------------------------------------------------------------------------------------------
# Map-reduce for inputs larger than the model's context


def _longest_fit(start: int, count: int, fits: Callable[[int, int], bool]) -> int:
    """The largest `end` with fits(start, end), assuming more units never take fewer tokens; start if none."""
    if not fits(start, start + 1):
        return start
    good, size = start + 1, 1
    while good < count:  # double until it no longer fits ...
        size *= 2
        candidate = min(count, start + size)
        if not fits(start, candidate):
            bad = candidate
            break
        good = candidate
    else:
        return good
    while bad - good > 1:  # ... then bisect
        middle = (good + bad) // 2
        good, bad = (middle, bad) if fits(start, middle) else (good, middle)
    return good


def plan_chunks(
    task: str, input: BaseModel | dict[str, Any], max_input_tokens: int, count_tokens: CountTokens
) -> list[BaseModel]:
    """`input` split into inputs whose messages fit `max_input_tokens`; `[input]` when it fits whole.

    Series are split by name, events by session (a session is only cut when it alone is too big).
    Raises PayloadTooLargeError when the task cannot be split or one unit alone does not fit.
    """
    spec = _spec(task)
    inp = _as_input(spec, input)

    def tokens(candidate: BaseModel) -> int:
        return count_tokens(build_messages(task, candidate))

    if tokens(inp) <= max_input_tokens:
        return [inp]
    if spec.splitter is None:
        raise PayloadTooLargeError(
            f"The {task} input is too large for the model's context ({max_input_tokens} tokens).",
            param="input",
        )
    groups, units = zip(*spec.splitter.units(inp), strict=True)

    def fits(start: int, end: int) -> bool:
        return tokens(spec.splitter.rebuild(inp, list(units[start:end]))) <= max_input_tokens

    chunks, start = [], 0
    while start < len(units):
        end = _longest_fit(start, len(units), fits)
        if end == start:
            raise PayloadTooLargeError(
                f"One {spec.splitter.unit_name} alone is too large for the model's context.", param="input"
            )
        if end < len(units) and groups[end - 1] == groups[end]:
            # Cut before the group that would be split, unless it began the chunk (it is too big).
            group_start = end - 1
            while group_start > start and groups[group_start - 1] == groups[end]:
                group_start -= 1
            end = group_start if group_start > start else end
        chunks.append(spec.splitter.rebuild(inp, list(units[start:end])))
        start = end
    return chunks


def reduce_messages(
    task: str,
    partial_outputs: Sequence[BaseModel | dict[str, Any]],
    input: BaseModel | dict[str, Any] | None = None,
    prepared: BaseModel | dict[str, Any] | None = None,
) -> Messages:
    """Messages asking the model to merge partial outputs into one output of the same schema.

    `input` and `prepared` add what the parts cannot know: the question, and overall figures
    (strongest correlations, totals) computed over the whole input.
    """
    spec = _spec(task)
    parts = [_as_output(spec, part).model_dump(mode="json") for part in partial_outputs]
    payload: dict[str, Any] = {"parts": parts}
    inp = _as_input(spec, input) if input is not None else None
    if isinstance(inp, AnalyzeDataInput) and inp.question:
        payload["question"] = inp.question
    if (overall := _as_prepared(spec, prepared)) is not None and spec.overview:
        payload["overall"] = spec.overview(overall)
    return _messages(f"{spec.system}\n\n{REDUCE_NOTE}", "Combine these partial results.", payload)


def plan_reduce(
    task: str,
    partial_outputs: Sequence[BaseModel | dict[str, Any]],
    max_input_tokens: int,
    count_tokens: CountTokens,
    *,
    input: BaseModel | dict[str, Any] | None = None,
    prepared: BaseModel | dict[str, Any] | None = None,
) -> list[list[BaseModel | dict[str, Any]]]:
    """Consecutive groups of partial outputs whose reduce messages fit; one group when all fit.

    Reduce each group of two or more, then plan again with the results, until one output is left.
    """
    spec = _spec(task)
    parts = list(partial_outputs)
    inp = _as_input(spec, input) if input is not None else None
    ready = _as_prepared(spec, prepared)

    def fits(start: int, end: int) -> bool:
        messages = reduce_messages(task, parts[start:end], inp, ready)
        return count_tokens(messages) <= max_input_tokens

    groups, start = [], 0
    while start < len(parts):
        end = _longest_fit(start, len(parts), fits)
        if end - start < 2 and len(parts) - start > 1:
            raise PayloadTooLargeError(
                "Two partial results together are too large for the model's context; "
                "use a model with a larger context.",
                param="input",
            )
        groups.append(parts[start:end])
        start = end
    return groups


# ---------------------------------------------------------------------------------------------
# The orchestrator for tests and simple use


@dataclass
class AnalysisResult:
    output: BaseModel  # the task's result model (statistics included where code computed them)
    calls: int  # model calls made, repairs included
    repaired: bool  # whether any call needed its repair attempt
    chunks: int = 1  # inputs in the map step (1: no map-reduce)


@dataclass(frozen=True)
class Budget:
    """The context limit for map-reduce, and how to measure messages against it."""

    max_input_tokens: int
    count_tokens: CountTokens


@dataclass
class _Run:
    """One run's calls, counted; every reply is checked against `inp`, the whole input, or a chunk."""

    task: str
    complete: Complete
    fmt: dict[str, Any]
    calls: int = 0
    repaired: bool = False

    async def ask(self, messages: Messages, inp: BaseModel) -> BaseModel:
        """One call, parsed; on an invalid reply exactly one repair call."""
        text = await self.complete(messages, self.fmt)
        self.calls += 1
        try:
            return parse_output(self.task, text, inp)
        except AnalysisOutputError as first:
            retry = repair_messages(self.task, messages, text, first.message)
        self.repaired = True
        text = await self.complete(retry, self.fmt)
        self.calls += 1
        try:
            return parse_output(self.task, text, inp)
        except AnalysisOutputError as second:
            raise AnalysisFailed(raw_output=text, error=second.message) from second

    async def reduce(
        self, partials: list[BaseModel], inp: BaseModel, prepared: BaseModel | None, budget: Budget
    ) -> BaseModel:
        """Reduce calls, in rounds of groups that fit, until one output is left."""
        while len(partials) > 1:
            groups = plan_reduce(
                self.task,
                partials,
                budget.max_input_tokens,
                budget.count_tokens,
                input=inp,
                prepared=prepared,
            )
            partials = [
                await self.ask(reduce_messages(self.task, group, inp, prepared), inp)
                if len(group) > 1
                else group[0]
                for group in groups
            ]
        return partials[0]


def approx_tokens(messages: Messages) -> int:
    """A rough count (4 characters a token) for callers without the model's tokenizer."""
    return sum(len(str(m.get("content") or "")) // 4 + 4 for m in messages)


async def run_analysis(
    task: str,
    input: BaseModel | dict[str, Any],
    complete: Complete,
    *,
    max_input_tokens: int | None = None,
    count_tokens: CountTokens = approx_tokens,
) -> AnalysisResult:
    """Run one analysis end to end with `complete(messages, response_format) -> text` as the model.

    Calls are sequential, so a scripted fake sees them in a fixed order; the job runner does the
    same steps itself to checkpoint each one.
    """
    spec = _spec(task)
    inp = _as_input(spec, input)
    prepared = spec.prepare(inp) if spec.prepare else None
    run = _Run(task, complete, response_format(task, inp))
    if max_input_tokens is None:
        output = await run.ask(spec.build_messages(inp, prepared), inp)
        return AnalysisResult(combine(task, output, prepared), calls=run.calls, repaired=run.repaired)
    chunks = plan_chunks(task, inp, max_input_tokens, count_tokens)
    if len(chunks) == 1:
        output = await run.ask(spec.build_messages(inp, prepared), inp)
    else:
        partials = [await run.ask(build_messages(task, chunk), chunk) for chunk in chunks]
        output = await run.reduce(partials, inp, prepared, Budget(max_input_tokens, count_tokens))
    return AnalysisResult(
        combine(task, output, prepared), calls=run.calls, repaired=run.repaired, chunks=len(chunks)
    )
