"""Analysis jobs: each task's input, the JSON the model must reply with, and the code-computed statistics.

Three families per task (see the shared/services/analysis package for how they are used):

- `...Input` — what a client submits. `data` / `events` may instead come from an uploaded file
  (`file_id`); the job runner loads the file into the same shape before any statistics are computed.
- Replies (`DataInsights`, `Decision`, `Content`, `TaskPlan`, `EventInsights`) — what the model
  writes. Their JSON schema is sent as strict structured output, narrowed to the input (options and
  names as enums, one required property per option or variant), so a model that follows the schema
  writes a valid reply. Providers accept only a small, portable subset of JSON Schema: what it
  cannot say (ranges, non-empty strings) lives in the validators here alone, and the validators
  check everything again, since not every provider enforces a schema.
- `DataAnalysis` / `EventSummary` — the job's result where code computed the numbers: the statistics
  plus the model's reading of them.

Validators that need the input (the options to choose from, how many variants were asked for, which
sessions exist) read it from the pydantic validation `context`, so the rule sits beside its field.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

MAX_SERIES = 256
MAX_OPTIONS = 20
MAX_VARIANTS = 5
# Size caps: how much one job may make a worker parse and compute (uploaded files have a byte cap
# too, in shared/services/analysis/loading.py). Inline input is kept in the job's Cosmos item,
# which Cosmos caps at 2 MB: larger data goes up as a file.
KIB = 1024
MAX_INLINE_BYTES = 1024 * KIB  # analyze_data and summarize_events input, as compact JSON
MAX_TEXT_INPUT_BYTES = 256 * KIB  # make_decision, generate_content and process_task input
MAX_DATA_VALUES = 100_000  # analyze_data: numbers in all series together, inline or from a file
MAX_EVENTS = 10_000  # summarize_events: events, inline or from a file

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
FileId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
# Strict: `true` or `"12"` in a numeric series is a mistake in the data, not a number.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
ContentType = Literal["marketing", "strategy", "email", "social", "blog", "other"]
Priority = Literal["low", "medium", "high", "urgent"]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_inline_bytes: ClassVar[int] = MAX_TEXT_INPUT_BYTES

    @model_validator(mode="before")
    @classmethod
    def _inline_size(cls, data: Any) -> Any:
        # With a file_id the data is still to be loaded, or was loaded from the file (capped there).
        if isinstance(data, dict) and data.get("file_id") is None:
            size = len(json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).encode())
            if size > cls.max_inline_bytes:
                upload = "file_id" in cls.model_fields
                raise PydanticCustomError(
                    "input_too_large",
                    "the input is {size} as JSON; inline input is capped at {cap}{hint}",
                    {
                        "size": size_text(size),
                        "cap": size_text(cls.max_inline_bytes),
                        "hint": "; upload larger data as a file and pass its file_id" if upload else "",
                    },
                )
        return data


def size_text(size: int) -> str:
    """A byte count as people read it, exact in brackets: `4 MiB (4,194,304 bytes)`."""
    for unit, scale in (("MiB", KIB * KIB), ("KiB", KIB)):
        if size >= scale:
            amount = size / scale
            number = f"{amount:.0f}" if amount.is_integer() else f"{amount:.2f}"
            return f"{number} {unit} ({size:,} bytes)"
    return f"{size:,} bytes"


def _file_or_inline(inline: object, file_id: str | None, field: str) -> None:
    # Both may be set: that is an input whose file the runner has already loaded into `field`.
    if inline is None and file_id is None:
        raise ValueError(f"either `{field}` or `file_id` is required")


# ---------------------------------------------------------------------------------------------
# Inputs


class AnalyzeDataInput(_Input):
    """Named numeric series, inline or from an uploaded CSV/JSON file, and an optional question."""

    max_inline_bytes: ClassVar[int] = MAX_INLINE_BYTES

    data: dict[Name, Annotated[list[Number], Field(min_length=1)]] | None = None
    file_id: FileId | None = None
    question: Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)] | None = None

    @field_validator("data")
    @classmethod
    def _some_series(cls, value: dict[str, list[float]] | None) -> dict[str, list[float]] | None:
        if value is not None and not 1 <= len(value) <= MAX_SERIES:
            raise ValueError(f"between 1 and {MAX_SERIES} named series")
        if value is not None and (count := sum(map(len, value.values()))) > MAX_DATA_VALUES:
            raise PydanticCustomError(
                "too_many_values",
                "analyze_data takes at most {cap} values in all series together; this input has {count}",
                {"cap": f"{MAX_DATA_VALUES:,}", "count": f"{count:,}"},
            )
        return value

    @model_validator(mode="after")
    def _has_data(self) -> AnalyzeDataInput:
        _file_or_inline(self.data, self.file_id, "data")
        return self


class DecisionInput(_Input):
    """A situation, the options to choose between and any constraints (budget, timeline, ...)."""

    situation: Text
    options: Annotated[list[Name], Field(min_length=2, max_length=MAX_OPTIONS)]
    constraints: dict[str, Any] | None = None

    @field_validator("options")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        # Case-insensitively distinct, so the model's choice maps back to exactly one option.
        if len({option.casefold() for option in value}) != len(value):
            raise ValueError("options must be distinct")
        return value


class ContentInput(_Input):
    """What to write, for whom, and how many alternative variants besides the main text."""

    content_type: ContentType
    context: Text
    tone: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    variants: int = Field(2, ge=1, le=MAX_VARIANTS)


class TaskInput(_Input):
    """A business task to triage into a category, a priority and concrete actions."""

    task: Text
    context: str | None = None


class EventsInput(_Input):
    """Coding-agent hook events (or similar), inline or from an uploaded JSONL file."""

    max_inline_bytes: ClassVar[int] = MAX_INLINE_BYTES

    events: Annotated[list[dict[str, Any]], Field(min_length=1)] | None = None
    file_id: FileId | None = None

    @field_validator("events")
    @classmethod
    def _not_too_many(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if value is not None and len(value) > MAX_EVENTS:
            raise PydanticCustomError(
                "too_many_events",
                "summarize_events takes at most {cap} events; this input has {count}",
                {"cap": f"{MAX_EVENTS:,}", "count": f"{len(value):,}"},
            )
        return value

    @model_validator(mode="after")
    def _has_events(self) -> EventsInput:
        _file_or_inline(self.events, self.file_id, "events")
        return self


# ---------------------------------------------------------------------------------------------
# Statistics computed in code


class Anomaly(BaseModel):
    """One point flagged by the z-score rule (|z| > 2.5), the IQR rule (1.5 × IQR), or both."""

    index: int
    value: float
    z_score: float | None
    rules: list[Literal["zscore", "iqr"]]


class SeriesStats(BaseModel):
    count: int
    sum: float
    mean: float
    median: float
    min: float
    max: float
    stdev: float | None  # sample standard deviation; None for a single point
    first: float
    last: float
    change: float
    pct_change: float | None  # None when the series starts at 0
    slope: float | None  # least-squares change per step; None for a single point
    anomaly_count: int
    anomalies: list[Anomaly]  # the most extreme ones, in index order


class Correlation(BaseModel):
    """Pearson r between two series of equal length (pairs with a constant series are left out)."""

    a: str
    b: str
    n: int
    r: float


class DataStatistics(BaseModel):
    series: dict[str, SeriesStats]
    correlations: list[Correlation]


class ToolStats(BaseModel):
    tool: str
    calls: int
    errors: int
    sessions: int
    timed_calls: int  # calls whose duration is known (explicit, or a Pre/Post pair)
    total_duration_ms: float | None
    mean_duration_ms: float | None
    max_duration_ms: float | None


class SessionStats(BaseModel):
    session: str
    events: int
    tool_calls: int
    errors: int
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    tools: dict[str, int]  # calls per tool
    event_types: dict[str, int]


class EventError(BaseModel):
    session: str
    tool: str | None
    timestamp: datetime | None
    message: str


class EventStatistics(BaseModel):
    events: int
    started_at: datetime | None
    ended_at: datetime | None
    sessions: list[SessionStats]
    tools: list[ToolStats]  # most calls first
    error_count: int
    errors: list[EventError]  # the first ones, in event order


# ---------------------------------------------------------------------------------------------
# Model replies (sent as strict JSON schemas) and results


def _context(info: ValidationInfo, key: str) -> Any:
    return (info.context or {}).get(key)


def canonical_name(name: str, known: list[str]) -> str | None:
    """`name` as spelled in `known`, ignoring case and surrounding space; None if it is not there."""
    wanted = name.strip().casefold()
    return next((k for k in known if k.strip().casefold() == wanted), None)


class DataInsights(BaseModel):
    """The model's reading of the statistics for `analyze_data`."""

    summary: Text = Field(description="Two to five sentences answering the question, citing the statistics.")
    trends: list[Text] = Field(description="One sentence per notable trend, naming the series.")
    anomalies: list[Text] = Field(description="What the flagged points mean; empty if none matter.")
    recommendations: list[Text] = Field(description="Concrete next steps.")


class DataAnalysis(DataInsights):
    """The `analyze_data` result: statistics from code plus the model's insights."""

    statistics: DataStatistics


def _scores_from_pairs(value: Any) -> Any:
    """Scores written as `[{option, score}]`: the form of the schema that does not know the options
    (strict schemas cannot have free keys), and of replies checkpointed before schemas were narrowed."""
    if not isinstance(value, list):
        return value
    scores: dict[str, Any] = {}
    for item in value:
        if not isinstance(item, dict) or set(item) != {"option", "score"}:
            raise ValueError("each score must be an object with `option` and `score`")
        if item["option"] in scores:
            raise ValueError(f"option {item['option']!r} is scored twice")
        scores[item["option"]] = item["score"]
    return scores


_SCORES_SCHEMA = {
    "type": "array",
    "description": "One entry per option, every option exactly once.",
    "items": {
        "type": "object",
        "properties": {
            "option": {"type": "string", "description": "The option, exactly as listed."},
            "score": {"type": "number", "description": "From 0 (worst) to 10 (best)."},
        },
        "required": ["option", "score"],
        "additionalProperties": False,
    },
}

Score = Annotated[float, Field(ge=0, le=10)]


class Decision(BaseModel):
    """The `make_decision` reply and result; `scores` has every option, keyed as the input spells it.

    The schema narrowed to an input asks for `scores` as `{option: score}` with every option a
    required property; `[{option, score}]` pairs are read too.
    """

    chosen_option: str = Field(description="The recommended option, copied exactly from the list.")
    rationale: Text = Field(description="Why this option wins, against the situation and constraints.")
    scores: Annotated[
        dict[str, Score],
        BeforeValidator(_scores_from_pairs),
        WithJsonSchema(_SCORES_SCHEMA, mode="validation"),
    ]
    confidence: float = Field(ge=0, le=1, description="From 0 to 1.")

    @model_validator(mode="after")
    def _against_options(self, info: ValidationInfo) -> Decision:
        options: list[str] | None = _context(info, "options")
        if options is None:
            return self
        chosen = canonical_name(self.chosen_option, options)
        if chosen is None:
            raise ValueError(f"chosen_option {self.chosen_option!r} is not one of the options {options}")
        scores: dict[str, float] = {}
        for name, score in self.scores.items():
            option = canonical_name(name, options)
            if option is None:
                raise ValueError(f"scores names {name!r}, which is not one of the options {options}")
            scores[option] = score
        if missing := [option for option in options if option not in scores]:
            raise ValueError(f"scores must cover every option; missing {missing}")
        self.chosen_option, self.scores = chosen, {option: scores[option] for option in options}
        return self


_VARIANT_NAME = re.compile(r"variant_([1-9][0-9]*)")


def variant_names(count: int) -> list[str]:
    """The property names of `count` variants in the schema narrowed to one input."""
    return [f"variant_{n}" for n in range(1, count + 1)]


def _variants_from_object(value: Any) -> Any:
    """Variants written as `{"variant_1": ..., "variant_2": ...}`, the form that fixes their number in
    a strict schema (one required property each), as a list in that order."""
    if not isinstance(value, dict):
        return value
    numbered: dict[int, Any] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not (match := _VARIANT_NAME.fullmatch(name)):
            raise ValueError(f"variants must be named variant_1, variant_2, ...; not {name!r}")
        numbered[int(match.group(1))] = text
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise ValueError(f"variants must be numbered from variant_1 with no gaps, not {list(value)}")
    return [numbered[n] for n in sorted(numbered)]


class Content(BaseModel):
    """The `generate_content` reply and result; the narrowed schema asks for `variants` as an object."""

    content: Text = Field(description="The main piece of content.")
    variants: Annotated[list[Text], BeforeValidator(_variants_from_object)] = Field(
        description="Alternative versions, exactly as many as requested."
    )

    @model_validator(mode="after")
    def _variant_count(self, info: ValidationInfo) -> Content:
        wanted: int | None = _context(info, "variants")
        if wanted is not None and len(self.variants) != wanted:
            raise ValueError(f"variants must have exactly {wanted} items, not {len(self.variants)}")
        return self


class Action(BaseModel):
    action: Text = Field(description="A concrete step, starting with a verb.")
    owner: str | None = Field(description="Who should do it (a role or team), or null.")
    due: str | None = Field(description="A date (YYYY-MM-DD) or relative deadline, or null.")


class TaskPlan(BaseModel):
    """The `process_task` reply and result."""

    category: Text = Field(description="One or two words, e.g. financial, marketing, operations, legal.")
    priority: Priority
    actions: list[Action] = Field(min_length=1, description="At least one action.")


class SessionNote(BaseModel):
    session: str = Field(description="The session id, exactly as in the statistics.")
    summary: Text


class ToolNote(BaseModel):
    tool: str = Field(description="The tool name, exactly as in the statistics.")
    summary: Text


class EventInsights(BaseModel):
    """The model's reading of the events for `summarize_events`."""

    summary: Text = Field(description="What happened overall, in two to five sentences.")
    sessions: list[SessionNote] = Field(description="One note per session worth describing.")
    tools: list[ToolNote] = Field(description="One note per tool worth describing.")
    errors: list[Text] = Field(description="Each distinct problem and its likely cause; empty if none.")
    notable_actions: list[Text] = Field(description="Actions worth a reviewer's attention.")

    @model_validator(mode="after")
    def _known_names(self, info: ValidationInfo) -> EventInsights:
        sessions: list[str] | None = _context(info, "sessions")
        tools: list[str] | None = _context(info, "tools")
        for note in self.sessions if sessions is not None else []:
            note.session = _known(note.session, sessions or [], "session")
        for tool_note in self.tools if tools is not None else []:
            tool_note.tool = _known(tool_note.tool, tools or [], "tool")
        return self


def _known(name: str, known: list[str], kind: str) -> str:
    found = canonical_name(name, known)
    if found is None:
        listed = known if len(known) <= 20 else [*known[:20], "..."]
        raise ValueError(f"{kind} {name!r} does not appear in the events; known {kind}s: {listed}")
    return found


class EventSummary(EventInsights):
    """The `summarize_events` result: statistics from code plus the model's reading of them."""

    statistics: EventStatistics
