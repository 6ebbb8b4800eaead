"""Map-reduce for inputs larger than the model's context: split the input into chunks whose prompts
fit, then merge the partial replies in reduce calls, in rounds of groups that fit.

Series are split by name, events by session (a session is only cut when it alone is too big);
the other tasks cannot be split.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared.errors import PayloadTooLargeError
from shared.models.analysis import AnalyzeDataInput, EventsInput
from shared.services.analysis.prompts import REDUCE_NOTE, Messages, chat_messages
from shared.services.analysis.statistics import normalise_event
from shared.services.analysis.tasks import as_input, as_output, as_prepared, build_messages, spec_for

CountTokens = Callable[[Messages], int]


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


# How each task's input splits; a task without an entry cannot be split.
SPLITTERS: dict[str, Splitter] = {
    "analyze_data": Splitter(_series_units, _with_series, "series"),
    "summarize_events": Splitter(_event_units, _with_events, "event"),
}


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
    spec = spec_for(task)
    inp = as_input(spec, input)

    def tokens(candidate: BaseModel) -> int:
        return count_tokens(build_messages(task, candidate))

    if tokens(inp) <= max_input_tokens:
        return [inp]
    if (splitter := SPLITTERS.get(task)) is None:
        raise PayloadTooLargeError(
            f"The {task} input is too large for the model's context ({max_input_tokens} tokens).",
            param="input",
        )
    groups, units = zip(*splitter.units(inp), strict=True)

    def fits(start: int, end: int) -> bool:
        return tokens(splitter.rebuild(inp, list(units[start:end]))) <= max_input_tokens

    chunks, start = [], 0
    while start < len(units):
        end = _longest_fit(start, len(units), fits)
        if end == start:
            raise PayloadTooLargeError(
                f"One {splitter.unit_name} alone is too large for the model's context.", param="input"
            )
        if end < len(units) and groups[end - 1] == groups[end]:
            # Cut before the group that would be split, unless it began the chunk (it is too big).
            group_start = end - 1
            while group_start > start and groups[group_start - 1] == groups[end]:
                group_start -= 1
            end = group_start if group_start > start else end
        chunks.append(splitter.rebuild(inp, list(units[start:end])))
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
    spec = spec_for(task)
    parts = [as_output(spec, part).model_dump(mode="json") for part in partial_outputs]
    payload: dict[str, Any] = {"parts": parts}
    inp = as_input(spec, input) if input is not None else None
    if isinstance(inp, AnalyzeDataInput) and inp.question:
        payload["question"] = inp.question
    if (overall := as_prepared(spec, prepared)) is not None and spec.overview:
        payload["overall"] = spec.overview(overall)
    return chat_messages(f"{spec.system}\n\n{REDUCE_NOTE}", "Combine these partial results.", payload)


def plan_reduce[Partial: BaseModel | dict[str, Any]](
    task: str,
    partial_outputs: Sequence[Partial],
    max_input_tokens: int,
    count_tokens: CountTokens,
    *,
    input: BaseModel | dict[str, Any] | None = None,
    prepared: BaseModel | dict[str, Any] | None = None,
) -> list[list[Partial]]:
    """Consecutive groups of partial outputs whose reduce messages fit; one group when all fit.

    Reduce each group of two or more, then plan again with the results, until one output is left.
    """
    spec = spec_for(task)
    parts = list(partial_outputs)
    inp = as_input(spec, input) if input is not None else None
    ready = as_prepared(spec, prepared)

    def fits(start: int, end: int) -> bool:
        messages = reduce_messages(task, parts[start:end], inp, ready)
        return count_tokens(messages) <= max_input_tokens

    groups: list[list[Partial]] = []
    start = 0
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
