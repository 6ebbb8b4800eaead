"""The task table: for each task, its input and reply models, its prompt, and what code computes.

The other modules add what only they need, keyed by task name: the schema narrowed to one input
(schema.py), how an input splits for map-reduce (chunking.py), which tasks read files (loading.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.models.analysis import (
    AnalyzeDataInput,
    Content,
    ContentInput,
    DataAnalysis,
    DataInsights,
    DataStatistics,
    Decision,
    DecisionInput,
    EventInsights,
    EventsInput,
    EventStatistics,
    EventSummary,
    TaskInput,
    TaskPlan,
)
from shared.services.analysis import prompts
from shared.services.analysis.errors import AnalysisInputError, describe
from shared.services.analysis.prompts import Messages
from shared.services.analysis.statistics import data_statistics, event_names, event_statistics


@dataclass(frozen=True)
class TaskSpec:
    """What one task type is; the functions are pure."""

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
            system=prompts.SYSTEM_ANALYZE,
            build_messages=prompts.analyze_messages,
            prepare=_prepare_series,
            prepared_model=DataStatistics,
            combine=lambda out, stats: DataAnalysis(**out.model_dump(), statistics=stats),
            overview=prompts.analyze_overview,
        ),
        TaskSpec(
            name="make_decision",
            input_model=DecisionInput,
            output_model=Decision,
            result_model=Decision,
            system=prompts.SYSTEM_DECIDE,
            build_messages=prompts.decide_messages,
            context=lambda inp: {"options": list(inp.options)},
        ),
        TaskSpec(
            name="generate_content",
            input_model=ContentInput,
            output_model=Content,
            result_model=Content,
            system=prompts.SYSTEM_CONTENT,
            build_messages=prompts.content_messages,
            context=lambda inp: {"variants": inp.variants},
        ),
        TaskSpec(
            name="process_task",
            input_model=TaskInput,
            output_model=TaskPlan,
            result_model=TaskPlan,
            system=prompts.SYSTEM_TASK,
            build_messages=prompts.task_messages,
        ),
        TaskSpec(
            name="summarize_events",
            input_model=EventsInput,
            output_model=EventInsights,
            result_model=EventSummary,
            system=prompts.SYSTEM_EVENTS,
            build_messages=prompts.events_messages,
            prepare=_prepare_events,
            prepared_model=EventStatistics,
            combine=lambda out, stats: EventSummary(**out.model_dump(), statistics=stats),
            overview=prompts.events_overview,
            context=lambda inp: event_names(inp.events or []),
        ),
    )
}


def spec_for(task: str) -> TaskSpec:
    """The task's spec; an unknown task is an input error naming the known ones."""
    try:
        return TASKS[task]
    except KeyError:
        raise AnalysisInputError(
            f"Unknown analysis task {task!r}; expected one of {sorted(TASKS)}.", param="task"
        ) from None


def as_input(spec: TaskSpec, input: BaseModel | dict[str, Any]) -> BaseModel:
    """`input` as the task's input model, validated; an input error says what is wrong."""
    if isinstance(input, spec.input_model):
        return input
    data = input.model_dump() if isinstance(input, BaseModel) else input
    try:
        return spec.input_model.model_validate(data)
    except ValidationError as exc:
        raise AnalysisInputError(f"Invalid input for {spec.name}: {describe(exc)}", param="input") from None


def as_prepared(spec: TaskSpec, prepared: BaseModel | dict[str, Any] | None) -> BaseModel | None:
    """`prepare`'s result, reloaded when a runner that checkpoints it as JSON hands back a dict."""
    if isinstance(prepared, dict) and spec.prepared_model:
        return spec.prepared_model.model_validate(prepared)
    return prepared if isinstance(prepared, BaseModel) else None


def as_output(spec: TaskSpec, output: BaseModel | dict[str, Any]) -> BaseModel:
    """A reply as the task's output model (a checkpointed reply comes back as a dict)."""
    return output if isinstance(output, BaseModel) else spec.output_model.model_validate(output)


def prepare(task: str, input: BaseModel | dict[str, Any]) -> BaseModel | None:
    """What code computes before the model is asked (statistics); None for tasks with nothing to compute."""
    spec = spec_for(task)
    return spec.prepare(as_input(spec, input)) if spec.prepare else None


def build_messages(
    task: str, input: BaseModel | dict[str, Any], prepared: BaseModel | dict[str, Any] | None = None
) -> Messages:
    """The chat messages for one call over `input` (prepared from it here unless given)."""
    spec = spec_for(task)
    inp = as_input(spec, input)
    ready = as_prepared(spec, prepared)
    if ready is None and spec.prepare:
        ready = spec.prepare(inp)
    return spec.build_messages(inp, ready)


def combine(
    task: str, output: BaseModel | dict[str, Any], prepared: BaseModel | dict[str, Any] | None
) -> BaseModel:
    """The job's result: the model's reply, with the code-computed statistics where the task has them."""
    spec = spec_for(task)
    reply = as_output(spec, output)
    return spec.combine(reply, as_prepared(spec, prepared)) if spec.combine else reply
