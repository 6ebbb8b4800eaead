"""Statistics computed in code: per-series figures for analyze_data, per-session and per-tool figures
for summarize_events.

Why in code: models are unreliable at arithmetic over long series, and a result that quotes a wrong
mean is worse than no result. The model gets the exact figures and interprets them.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from shared.models.analysis import (
    Anomaly,
    Correlation,
    DataStatistics,
    EventError,
    EventStatistics,
    SeriesStats,
    SessionStats,
    ToolStats,
)

Z_LIMIT = 2.5
IQR_FACTOR = 1.5
MIN_POINTS_FOR_ANOMALIES = 4  # below this, neither rule says anything useful
MAX_ANOMALIES = 20  # per series, the most extreme; `anomaly_count` keeps the total
MAX_ERRORS = 50  # event errors kept in the statistics; `error_count` keeps the total
NO_SESSION = "(no session)"


def parse_number(cell: str) -> float | None:
    """A text cell as a finite number; None when it is not one."""
    try:
        value = float(cell.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def json_number(value: Any) -> float | None:
    """A JSON value as a finite number; None for anything else (booleans included)."""
    # bool is an int in Python; in data it is a mistake, not 0 or 1.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


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


def first_field(raw: dict[str, Any], *names: str) -> Any:
    """The first of `names` that `raw` has a non-empty value for."""
    return next((raw[name] for name in names if raw.get(name) not in (None, "")), None)


def brief(value: Any, limit: int = 300) -> str:
    """`value` (an error's message, or any JSON) as text of at most `limit` characters."""
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
            return parse_timestamp(parse_number(value))
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
        return "error" if raw["error"] is True else brief(raw["error"])
    status = raw.get("status")
    if isinstance(status, str) and status.lower() in FAILED_STATUSES:
        return f"status {status}"
    response = raw.get("tool_response")
    if isinstance(response, dict) and (response.get("is_error") or response.get("error")):
        return brief(response.get("error") or response.get("content") or "the tool reported an error")
    if raw.get("hook_event_name") == "PostToolUseFailure":
        return "the tool call failed"
    return None


def normalise_event(raw: dict[str, Any]) -> Event:
    """Read an event's fields under the names different producers use (`tool_name`/`tool`, ...)."""
    duration = first_field(raw, "duration_ms")
    return Event(
        session=str(first_field(raw, "session_id", "session") or NO_SESSION),
        tool=_opt_str(first_field(raw, "tool_name", "tool")),
        kind=_opt_str(first_field(raw, "hook_event_name", "event", "event_type", "type")),
        at=parse_timestamp(first_field(raw, "timestamp", "ts", "time", "created_at")),
        error=_error_of(raw),
        duration_ms=json_number(duration),
        call_id=_opt_str(first_field(raw, "tool_use_id", "call_id")),
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
            opened = _Call(ev.session, ev.tool, started=ev.at, duration_ms=ev.duration_ms, error=ev.error)
            calls.append(opened)
            if ev.call_id:
                open_by_id[ev.call_id] = opened
            else:
                open_by_key[key].append(opened)
            continue
        call: _Call | None = None
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


def event_names(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The sessions and tools the events name, in order of first appearance."""
    normalised = [normalise_event(raw) for raw in events]
    return {
        "sessions": list(dict.fromkeys(ev.session for ev in normalised)),
        "tools": list(dict.fromkeys(ev.tool for ev in normalised if ev.tool)),
    }
