"""Reading inputs: uploaded CSV, JSON and JSON Lines files parsed into each task's inline shape.

Caps: a file is refused past its task's byte cap (MAX_FILE_BYTES) before it is parsed; what it
holds is then capped like inline input (values and events: shared/models/analysis.py). Parsing,
validation and statistics grow with the input, so `run_analysis` runs them in a worker thread.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.models.analysis import KIB, size_text
from shared.services.analysis.errors import AnalysisInputError, describe
from shared.services.analysis.statistics import json_number, parse_number
from shared.services.analysis.tasks import as_input, spec_for

# The largest file each task reads (a few MiB: parsing one takes well under a second of CPU).
MAX_FILE_BYTES = {"analyze_data": 4 * KIB * KIB, "summarize_events": 8 * KIB * KIB}


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
    if not cells or parse_number(cells[0][1]) is None:
        return None
    values = []
    for line, cell in cells:
        if (value := parse_number(cell)) is None:
            raise AnalysisInputError(
                f"CSV row {line}, column {name!r}: {cell!r} is not a number.", param="file_id"
            )
        values.append(value)
    return values


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
    if (number := json_number(value)) is None:
        raise AnalysisInputError(f"Series {name!r}[{index}]: {value!r} is not a number.", param="file_id")
    return number


def _series_from_records(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    names = list(dict.fromkeys(key for row in rows for key in row))
    series = {}
    for name in names:
        cells = [(i, row[name]) for i, row in enumerate(rows) if row.get(name) is not None]
        if not cells or json_number(cells[0][1]) is None:
            continue  # a label field, like a CSV label column
        series[name] = [_record_point(name, i, v) for i, v in cells]
    if not series:
        raise AnalysisInputError("The JSON records have no numeric fields.", param="file_id")
    return series


def _record_point(name: str, row: int, value: Any) -> float:
    if (number := json_number(value)) is None:
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


@dataclass(frozen=True)
class UploadedFile:
    """A task's input with its uploaded file's content, not parsed yet: `run_analysis` parses it in a
    worker thread, so a large file does not hold up the event loop (and every other request on the
    worker) while it is read."""

    input: BaseModel | dict[str, Any]
    content: str | bytes
    filename: str | None = None


def max_file_bytes(task: str) -> int:
    """The largest file `task` reads; an input error for a task that takes no file."""
    spec_for(task)
    if task not in MAX_FILE_BYTES:
        raise AnalysisInputError(f"Task {task!r} does not take a file.", param="file_id")
    return MAX_FILE_BYTES[task]


def _check_file_size(task: str, content: str | bytes) -> None:
    cap = max_file_bytes(task)
    size = len(content) if isinstance(content, bytes) else len(content.encode("utf-8", errors="replace"))
    if size > cap:
        raise AnalysisInputError(
            f"The file is {size_text(size)}; {task} reads files of at most {size_text(cap)}.",
            param="file_id",
        )


def load_file(
    task: str, input: BaseModel | dict[str, Any], content: str | bytes, *, filename: str | None = None
) -> UploadedFile:
    """`input` with its uploaded file, for `run_analysis` to parse off the event loop.

    Only what is cheap is checked here: that the task takes a file and that the file is within its
    cap. `parse_file` parses at once.
    """
    _check_file_size(task, content)
    return UploadedFile(input, content, filename)


def parse_file(
    task: str, input: BaseModel | dict[str, Any], content: str | bytes, *, filename: str | None = None
) -> BaseModel:
    """`input` with its uploaded file's content parsed into `data` (CSV/JSON) or `events` (JSONL)."""
    spec = spec_for(task)
    _check_file_size(task, content)
    text = content.decode("utf-8-sig", errors="replace") if isinstance(content, bytes) else content
    current = as_input(spec, input).model_dump()
    if task == "analyze_data":
        as_json = (filename or "").lower().endswith(".json") or text.lstrip("\ufeff \r\n\t")[:1] in ("{", "[")
        current["data"] = series_from_json(_json_document(text)) if as_json else series_from_csv(text)
    else:
        current["events"] = events_from_jsonl(text)
    try:
        return spec.input_model.model_validate(current)
    except ValidationError as exc:
        raise AnalysisInputError(
            f"The file's content is not valid input: {describe(exc)}", param="file_id"
        ) from None


def read_input(task: str, input: BaseModel | dict[str, Any] | UploadedFile) -> BaseModel:
    """The task's input model: an uploaded file parsed, anything else validated. CPU work that grows
    with the input: `run_analysis` calls it in a worker thread."""
    if isinstance(input, UploadedFile):
        return parse_file(task, input.input, input.content, filename=input.filename)
    return as_input(spec_for(task), input)


def _json_document(text: str) -> Any:
    try:
        return json.loads(text.lstrip("\ufeff"))
    except json.JSONDecodeError as exc:
        raise AnalysisInputError(
            f"The file is not valid JSON: {exc.msg} at line {exc.lineno}.", param="file_id"
        ) from None
