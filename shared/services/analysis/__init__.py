"""Analysis jobs: typed tasks answered with strict structured output, with the numbers computed in code.

The package does no I/O and makes no model calls of its own: the job runner reads uploaded files
and makes each model call, so it can checkpoint every step. `run_analysis` strings the steps
together and runs the CPU work between calls in a worker thread, off the event loop.

- errors.py — bad input (a 400), a bad reply (repairable), a reply still bad after its repair
- loading.py — uploaded CSV/JSON/JSONL files into each task's inline shape; the caps on files
- statistics.py — the figures computed in code (series, correlations, sessions, tools)
- prompts.py — system prompts and the user message that carries the input
- tasks.py — the task table: input/reply/result models, prompt, what code computes
- schema.py — the reply's strict JSON schema, narrowed to one input
- output.py — parsing the reply against the schema and the input, and the one repair turn
- chunking.py — map-reduce for inputs larger than the model's context
- run.py — one analysis end to end
"""

from shared.services.analysis.chunking import CountTokens, Splitter, plan_chunks, plan_reduce, reduce_messages
from shared.services.analysis.errors import AnalysisFailed, AnalysisInputError, AnalysisOutputError
from shared.services.analysis.loading import (
    UploadedFile,
    events_from_jsonl,
    load_file,
    max_file_bytes,
    parse_file,
    series_from_csv,
    series_from_json,
)
from shared.services.analysis.output import parse_output, repair_messages
from shared.services.analysis.prompts import Messages
from shared.services.analysis.run import AnalysisResult, Budget, Complete, approx_tokens, run_analysis
from shared.services.analysis.schema import response_format, strict_schema
from shared.services.analysis.statistics import (
    Event,
    data_statistics,
    event_statistics,
    normalise_event,
    parse_timestamp,
    pearson,
    series_stats,
)
from shared.services.analysis.tasks import TASKS, TaskSpec, build_messages, combine, prepare

__all__ = [
    "TASKS",
    "AnalysisFailed",
    "AnalysisInputError",
    "AnalysisOutputError",
    "AnalysisResult",
    "Budget",
    "Complete",
    "CountTokens",
    "Event",
    "Messages",
    "Splitter",
    "TaskSpec",
    "UploadedFile",
    "approx_tokens",
    "build_messages",
    "combine",
    "data_statistics",
    "event_statistics",
    "events_from_jsonl",
    "load_file",
    "max_file_bytes",
    "normalise_event",
    "parse_file",
    "parse_output",
    "parse_timestamp",
    "pearson",
    "plan_chunks",
    "plan_reduce",
    "prepare",
    "reduce_messages",
    "repair_messages",
    "response_format",
    "run_analysis",
    "series_from_csv",
    "series_from_json",
    "series_stats",
    "strict_schema",
]
