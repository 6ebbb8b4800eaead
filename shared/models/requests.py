"""Request bodies as Cirrus accepts them: OpenAI's fields, checked before any provider call.

Why not `openai.types.chat.CompletionCreateParams`: those are TypedDicts with `Iterable` fields,
which pydantic validates lazily (as generators), so errors would surface mid-request. Answers are
not validated here: the data plane relays providers' OpenAI-shaped JSON (shared/clients/llm).

Unknown top-level fields are rejected the way OpenAI rejects them, and fields that would steer
where Cirrus connects or which credentials it uses get their own message: no client chooses a
provider URL or key. Messages and content parts keep extra keys (`name`, `cache_control`, ...):
they are content for the provider, not instructions to Cirrus.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

# Body fields that LiteLLM or provider SDKs would treat as connection settings.
STEERING_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "api_type",
        "organization",
        "extra_headers",
        "extra_query",
        "extra_body",
        "headers",
        "custom_llm_provider",
        "azure_ad_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_region_name",
        "vertex_project",
        "vertex_location",
        "vertex_credentials",
        "mock_response",
        "litellm_params",
        "model_list",
        "proxy_server_request",
        "timeout",
        "max_retries",
    }
)

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
ShortStr = Annotated[str, StringConstraints(max_length=512)]


class OpenAIRequest(BaseModel):
    """Base of the request models: unknown fields are refused, steering fields loudest of all."""

    # Extras are allowed only so the validator below can name them; the schema says they are refused.
    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": False})

    model: str = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _no_unknown_fields(self) -> OpenAIRequest:
        for name in self.model_extra or {}:
            if name in STEERING_FIELDS:
                raise SteeringFieldError(name)
            raise UnknownFieldError(name)
        return self

    def upstream_params(self) -> dict[str, Any]:
        """The fields the client set, as plain JSON values for the provider call."""
        return self.model_dump(mode="json", exclude_unset=True)


class ContentPart(BaseModel):
    """One part of a multi-part message (`text`, `image_url`, `input_audio`, `file`, `refusal`)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "image_url", "input_audio", "file", "refusal"]


class ChatMessage(BaseModel):
    """One message of the conversation; role-specific rules follow OpenAI's."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _role_rules(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a `tool` message needs `tool_call_id`")
        # An assistant turn may carry only tool calls; every other role must say something.
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a `{self.role}` message needs `content`")
        return self


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class ChatCompletionCreate(OpenAIRequest):
    """`POST /v1/chat/completions` body. Everything not set by the client stays unset."""

    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: ShortStr | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, int] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    metadata: dict[ShortStr, ShortStr] | None = None
    store: bool | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    service_tier: str | None = None
    web_search_options: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_limit(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @field_validator("tools")
    @classmethod
    def _tools_are_functions(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for tool in value or []:
            if tool.get("type") not in ("function", "custom") or not isinstance(
                tool.get("function", tool.get("custom")), dict
            ):
                raise ValueError("each tool needs `type: function` and a `function` object")
        return value

    @property
    def output_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


TokenIds = list[Annotated[int, Field(ge=0)]]


class CompletionCreate(OpenAIRequest):
    """`POST /v1/completions` (legacy text completions) body."""

    prompt: str | list[str] | TokenIds | list[TokenIds]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    best_of: int | None = Field(None, ge=1, le=20)
    echo: bool | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    logit_bias: dict[str, int] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    suffix: str | None = None
    user: ShortStr | None = None

    @property
    def output_cap(self) -> int | None:
        return self.max_tokens


MAX_EMBEDDING_INPUTS = 2048  # OpenAI's own limit per request


class EmbeddingCreate(OpenAIRequest):
    """`POST /v1/embeddings` body."""

    input: (
        Annotated[str, StringConstraints(min_length=1)]
        | Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]
        | Annotated[TokenIds, Field(min_length=1)]
        | Annotated[list[Annotated[TokenIds, Field(min_length=1)]], Field(min_length=1)]
    )
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(None, ge=1)
    user: ShortStr | None = None

    @field_validator("input")
    @classmethod
    def _input_count(cls, value: Any) -> Any:
        if (
            isinstance(value, list)
            and value
            and not isinstance(value[0], int)
            and len(value) > MAX_EMBEDDING_INPUTS
        ):
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request")
        return value


class UnknownFieldError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Unrecognized request argument supplied: {name}")
        self.name = name


class SteeringFieldError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"`{name}` cannot be set by clients: Cirrus chooses providers, endpoints and "
            "credentials from its model configuration"
        )
        self.name = name
