"""Running one analysis end to end; the job runner calls it with a `complete` that checkpoints each
model answer, so a restarted run replays them instead of asking again:

    prepare (statistics in code)
      → one call, or, when the prompt exceeds the context: one map call per chunk, then reduce calls
      → parse_output (JSON + pydantic, including rules that need the input)
      → on failure, exactly one repair call (repair_messages); a second failure raises AnalysisFailed
      → combine (statistics + the model's fields) for analyze_data and summarize_events
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared.services.analysis.chunking import CountTokens, plan_chunks, plan_reduce, reduce_messages
from shared.services.analysis.errors import AnalysisFailed, AnalysisOutputError
from shared.services.analysis.loading import UploadedFile, read_input
from shared.services.analysis.output import parse_output, repair_messages
from shared.services.analysis.prompts import Messages
from shared.services.analysis.schema import response_format
from shared.services.analysis.tasks import build_messages, combine, spec_for

Complete = Callable[[Messages, dict[str, Any]], Awaitable[str]]


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
    """One run's calls, counted; every reply is checked against `inp`, the whole input, or a chunk,
    and asked for with the schema narrowed to that same input (a chunk's sessions, not all)."""

    task: str
    complete: Complete
    calls: int = 0
    repaired: bool = False

    async def ask(self, messages: Messages, inp: BaseModel) -> BaseModel:
        """One call, parsed; on an invalid reply exactly one repair call."""
        fmt = await asyncio.to_thread(response_format, self.task, inp)
        text = await self.complete(messages, fmt)
        self.calls += 1
        try:
            return await asyncio.to_thread(parse_output, self.task, text, inp)
        except AnalysisOutputError as first:
            retry = repair_messages(self.task, messages, text, first.message)
        self.repaired = True
        text = await self.complete(retry, fmt)
        self.calls += 1
        try:
            return await asyncio.to_thread(parse_output, self.task, text, inp)
        except AnalysisOutputError as second:
            raise AnalysisFailed(raw_output=text, error=second.message) from second

    async def reduce(
        self, partials: list[BaseModel], inp: BaseModel, prepared: BaseModel | None, budget: Budget
    ) -> BaseModel:
        """Reduce calls, in rounds of groups that fit, until one output is left."""
        while len(partials) > 1:
            groups = await asyncio.to_thread(
                plan_reduce,
                self.task,
                partials,
                budget.max_input_tokens,
                budget.count_tokens,
                input=inp,
                prepared=prepared,
            )
            reduced = []
            for group in groups:
                if len(group) == 1:
                    reduced.append(group[0])
                    continue
                messages = await asyncio.to_thread(reduce_messages, self.task, group, inp, prepared)
                reduced.append(await self.ask(messages, inp))
            partials = reduced
        return partials[0]


def approx_tokens(messages: Messages) -> int:
    """A rough count (4 characters a token) for callers without the model's tokenizer."""
    return sum(len(str(m.get("content") or "")) // 4 + 4 for m in messages)


@dataclass(frozen=True)
class _Plan:
    inp: BaseModel
    prepared: BaseModel | None
    chunks: list[BaseModel] | None  # None: no budget given, so no map-reduce


def _plan(task: str, input: BaseModel | dict[str, Any] | UploadedFile, budget: Budget | None) -> _Plan:
    inp = read_input(task, input)
    spec = spec_for(task)
    prepared = spec.prepare(inp) if spec.prepare else None
    chunks = plan_chunks(task, inp, budget.max_input_tokens, budget.count_tokens) if budget else None
    return _Plan(inp, prepared, chunks)


async def run_analysis(
    task: str,
    input: BaseModel | dict[str, Any] | UploadedFile,
    complete: Complete,
    *,
    max_input_tokens: int | None = None,
    count_tokens: CountTokens = approx_tokens,
) -> AnalysisResult:
    """Run one analysis end to end with `complete(messages, response_format) -> text` as the model.

    `input` may be an `UploadedFile` (from `load_file`): it is parsed here. Everything between model
    calls that grows with the input (parsing, validation, statistics, chunking, prompts, parsing
    replies) runs in a worker thread, so a large input never blocks the event loop. Calls are
    sequential, so a scripted fake sees them in a fixed order.
    """
    spec = spec_for(task)
    budget = Budget(max_input_tokens, count_tokens) if max_input_tokens is not None else None
    plan = await asyncio.to_thread(_plan, task, input, budget)
    inp, prepared = plan.inp, plan.prepared
    run = _Run(task, complete)
    chunks = plan.chunks or [inp]
    if budget is None or len(chunks) == 1:
        messages = await asyncio.to_thread(spec.build_messages, inp, prepared)
        output = await run.ask(messages, inp)
    else:
        partials = []
        for chunk in chunks:
            messages = await asyncio.to_thread(build_messages, task, chunk)
            partials.append(await run.ask(messages, chunk))
        output = await run.reduce(partials, inp, prepared, budget)
    result = await asyncio.to_thread(combine, task, output, prepared)
    return AnalysisResult(result, calls=run.calls, repaired=run.repaired, chunks=len(chunks))
