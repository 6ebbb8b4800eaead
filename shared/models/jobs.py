"""Jobs: agent runs and analysis tasks, submitted over HTTP or straight onto the jobs queue."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.models.requests import ChatMessage
from shared.models.validation import param_path

JobStatus = Literal["queued", "running", "cancelling", "completed", "failed", "cancelled", "incomplete"]
ENDED = frozenset({"completed", "failed", "cancelled", "incomplete"})
QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
JOB_ID = re.compile(r"^job_[A-Za-z0-9_-]{6,64}$")
MAX_STEPS = 50
MAX_TIMEOUT_S = 1500  # inside host.json's 30-minute functionTimeout, with room to wrap up


class _Function(BaseModel):
    name: str = Field(min_length=1)
    arguments: str


class _ToolCall(BaseModel):
    """A tool call in an agent's `input`: the runner may have to answer it itself, so it must have
    what the runner reads (OpenAI's shape)."""

    id: str = Field(min_length=1)
    type: Literal["function"]
    function: _Function


_TOOL_CALLS = TypeAdapter(list[_ToolCall])


def _chat_message(value: dict[str, Any]) -> dict[str, Any]:
    """One message of an agent run's `input`, checked by the chat request's message rules (and its
    tool calls by the shape the runner reads); kept as given."""
    try:
        message = ChatMessage.model_validate(value)
        if message.tool_calls is not None:
            try:
                _TOOL_CALLS.validate_python(message.tool_calls)
            except ValidationError as exc:
                raise ValueError(_first_problem(exc, "tool_calls")) from None
    except ValidationError as exc:
        raise ValueError(_first_problem(exc)) from None
    return value


def _first_problem(exc: ValidationError, under: str = "") -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = param_path((under, *error["loc"]) if under else error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


AgentMessage = Annotated[dict[str, Any], AfterValidator(_chat_message)]


class JobCreate(BaseModel):
    """POST /v1/jobs, and the `job` of a queue-submitted message (schema version 1)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["agent", "analysis"]
    model: str = Field(min_length=1, max_length=256)
    # agent runs
    instructions: str | None = Field(None, max_length=100_000)
    # an agent run's: text, or chat messages; an analysis job's: the task's fields
    input: str | list[AgentMessage] | dict[str, Any] | None = Field(None, validate_default=True)
    tools: list[str] = Field(default_factory=list, max_length=16)
    max_steps: int = Field(10, ge=1, le=MAX_STEPS)
    max_cost_usd: float | None = Field(None, gt=0)
    timeout_s: int = Field(600, ge=1, le=MAX_TIMEOUT_S)
    # analysis jobs
    task: (
        Literal["analyze_data", "make_decision", "generate_content", "process_task", "summarize_events"]
        | None
    ) = None
    # either kind
    webhook_url: str | None = Field(None, max_length=2048)
    reply_queue: str | None = None
    metadata: dict[str, str] | None = None

    @field_validator("input")
    @classmethod
    def _agent_input(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("type") == "agent" and (not value or isinstance(value, dict)):
            raise ValueError("an agent run needs `input`: a non-empty string or a list of chat messages")
        return value

    @field_validator("reply_queue")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        if value is not None and not QUEUE_NAME.match(value):
            raise ValueError("must be a storage queue name (3-63 of a-z, 0-9 and single hyphens)")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _kind(self) -> JobCreate:
        if self.type == "agent":
            if self.task is not None:
                raise ValueError("`task` is for analysis jobs")
        else:
            if self.task is None:
                raise ValueError("an analysis job needs `task`")
            if not isinstance(self.input, dict):
                raise ValueError("an analysis job's `input` is an object (see the task's fields)")
            if self.tools:
                raise ValueError("`tools` is for agent runs")
        return self


class ResponseJobSpec(BaseModel):
    """A background response's job (made by POST /v1/responses, never by /v1/jobs or the queue):
    the response it runs, and the same stops an agent run has."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["response"] = "response"
    model: str
    response_id: str
    max_cost_usd: float | None = Field(None, gt=0)
    timeout_s: int = Field(MAX_TIMEOUT_S, ge=1, le=MAX_TIMEOUT_S)


class JobMessage(BaseModel):
    """A message on the jobs queue. Cirrus sends `{"v": 1, "job_id"}` for jobs made over HTTP;
    other systems send the whole job, naming the key it runs as (queue send rights are the trust
    boundary: the key's secret is not needed, its id is)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1]
    job_id: str
    key_id: str | None = Field(None, max_length=64)
    job: JobCreate | None = None
    reply_queue: str | None = None
    traceparent: str | None = Field(None, max_length=256)

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, value: str) -> str:
        if not JOB_ID.match(value):
            raise ValueError("must look like job_<6 to 64 letters, digits, - or _>")
        return value

    @field_validator("reply_queue")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        return JobCreate._queue_name(value)

    @model_validator(mode="after")
    def _whole(self) -> JobMessage:
        if self.job is not None and not self.key_id:
            raise ValueError("a submitted job must name the `key_id` it runs as")
        return self


class JobRecord(BaseModel):
    """The Cosmos item (`jobs`, partitioned by job id): the job, its progress and its checkpoint."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str
    pk: str
    object: Literal["job"] = "job"
    type: Literal["agent", "analysis", "response"]
    status: JobStatus = "queued"
    spec: dict[str, Any]
    owner: str
    team: str | None = None
    source: Literal["http", "queue"] = "http"
    created_at: int
    ts: float
    started_at: int | None = None
    ended_at: int | None = None
    worker: str | None = None
    lease_until: float = 0.0
    attempts: int = 0
    step: int = 0
    steps: list[dict[str, Any]] = Field(default_factory=list)
    messages: list[dict[str, Any]] = Field(default_factory=list)  # the agent's conversation so far
    calls: list[str] = Field(default_factory=list)  # an analysis's model answers, replayed on resume
    result: Any = None
    usage: dict[str, float] = Field(
        default_factory=lambda: {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
    )
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, str] | None = None
    event_seq: int = 0
    swept_at: float | None = None  # when the sweeper last re-sent its message
    etag: str | None = Field(None, alias="_etag", exclude=True)

    def public(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "id": self.id,
            "object": "job",
            "type": self.type,
            "task": spec.get("task"),
            "model": spec.get("model"),
            "status": self.status,
            "source": self.source,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "progress": {"step": self.step, "max_steps": spec.get("max_steps")},
            "steps": self.steps,
            "result": self.result,
            "usage": self.usage,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            "metadata": spec.get("metadata"),
        }


class JobProgress(BaseModel):
    step: int
    max_steps: int | None = None


class JobPublic(BaseModel):
    """A job as `/v1/jobs` returns it (`JobRecord.public()`)."""

    id: str
    object: Literal["job"] = "job"
    type: Literal["agent", "analysis", "response"]
    task: str | None
    model: str | None
    status: JobStatus
    source: Literal["http", "queue"]
    created_at: int
    started_at: int | None
    ended_at: int | None
    progress: JobProgress
    steps: list[dict[str, Any]]
    result: Any
    usage: dict[str, float]
    error: dict[str, Any] | None
    incomplete_details: dict[str, str] | None
    metadata: dict[str, str] | None


class JobEventsTokenPublic(BaseModel):
    """`POST /v1/jobs/{job_id}/events/token`: a token for that job's event stream, for browsers'
    `EventSource`, which cannot send a key (`shared/services/stream_tokens.py`)."""

    object: Literal["job.events_token"] = "job.events_token"
    job_id: str
    token: str = Field(description="Pass as `?token=` to `GET /v1/jobs/{job_id}/events`, and nowhere else.")
    expires_at: int = Field(description="Unix time after which a stream can no longer be opened with it.")
