"""How the fake provider answers: the `Behaviour` model and the profile-path syntax."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Fault = Literal["none", "429", "500", "503", "reset", "timeout", "cut"]


class ToolCall(BaseModel):
    """A function call the fake model makes instead of replying with text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class Behaviour(BaseModel):
    """How to answer one request.

    Fields left unset in a queued or profile behaviour fall back to the server default.
    `require_api_key` / `require_bearer` are checked before anything else (a refused request gets
    a 401 and uses up no queued script or `fail_first` count). Failure precedence after that:
    `fault` reset/timeout/cut, then `status`, then `fault` 429/500/503.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(default=0, ge=0, description="Delay before the response (or first byte).")
    chunk_delay_ms: float = Field(default=0, ge=0, description="Delay between streamed chunks.")
    tokens_per_chunk: int = Field(default=1, ge=1, description="Words per streamed content chunk.")
    reply: str | None = Field(default=None, description="Reply text instead of the generated one.")
    fault: Fault = "none"
    status: int | None = Field(default=None, ge=400, le=599, description="Answer with this error status.")
    retry_after: float | None = Field(default=None, ge=0, description="Retry-After seconds on 429/503.")
    cut_after: int = Field(default=1, ge=0, description="fault=cut: chunks sent before the drop.")
    fail_first: int = Field(
        default=0, ge=0, description="Fail only the first N requests using this behaviour (500 unless set)."
    )
    tool_calls: list[ToolCall] | None = None
    context_window: int | None = Field(
        default=None, ge=1, description="Reject chat prompts over this many words with OpenAI's 400."
    )
    omit_usage: bool = Field(default=False, description="Send no usage at all, as some providers do.")
    error_message: str | None = Field(default=None, description="Message of a `status` or fault error.")
    require_api_key: str | None = Field(
        default=None, min_length=1, description="Refuse (401) requests without the header `api-key: <value>`."
    )
    require_bearer: str | None = Field(
        default=None,
        min_length=1,
        description="Refuse (401) requests without `Authorization: Bearer <value>`; with `require_api_key` "
        "too, either credential is accepted.",
    )

    @field_validator("fault", mode="before")
    @classmethod
    def _fault_as_text(cls, value: Any) -> Any:
        # `{"fault": 429}` is the natural thing to write in JSON.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def merge(default: Behaviour, override: Behaviour) -> Behaviour:
    """`default` with the fields explicitly set on `override`."""
    return default.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


def parse_profile(spec: str) -> Behaviour:
    """Parse a profile path segment such as `fault=429,retry_after=2` (raises ValueError)."""
    fields: dict[str, str] = {}
    for item in spec.split(","):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"profile item {item!r} is not key=value")
        if key == "tool_calls":
            raise ValueError("tool_calls cannot be set in a profile; use /_control/enqueue")
        fields[key] = value
    return Behaviour.model_validate(fields)  # pydantic's ValidationError is a ValueError


class EnqueueRequest(BaseModel):
    """Body of `POST /_control/enqueue`."""

    model_config = ConfigDict(extra="forbid")

    behaviour: Behaviour = Field(default_factory=Behaviour)
    times: int = Field(default=1, ge=1)
    model: str | None = None
