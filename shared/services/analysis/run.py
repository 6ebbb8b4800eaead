"""Running one analysis end to end; the job runner calls it with a `complete` that checkpoints each
model answer, so a restarted run replays them instead of asking again:

    prepare (statistics in code)
      → one call, or, when the prompt exceeds the context: one map call per chunk, then reduce calls
      → parse_output (JSON + pydantic, including rules that need the input)
      → on failure, exactly one repair call (repair_messages); a second failure raises AnalysisFailed
      → combine (statistics + the model's fields) for analyze_data and summarize_events
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared.services.analysis.chunking import CountTokens, plan_chunks, plan_reduce, reduce_messages
from shared.services.analysis.errors import AnalysisFailed, AnalysisOutputError
from shared.services.analysis.output import parse_output, repair_messages
from shared.services.analysis.prompts import Messages
from shared.services.analysis.schema import response_format
from shared.services.analysis.tasks import as_input, build_messages, combine, spec_for

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
        fmt = response_format(self.task, inp)
        text = await self.complete(messages, fmt)
        self.calls += 1
        try:
            return parse_output(self.task, text, inp)
        except AnalysisOutputError as first:
            retry = repair_messages(self.task, messages, text, first.message)
        self.repaired = True
        text = await self.complete(retry, fmt)
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
    spec = spec_for(task)
    inp = as_input(spec, input)
    prepared = spec.prepare(inp) if spec.prepare else None
    run = _Run(task, complete)
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
