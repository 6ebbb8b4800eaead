"""Anthropic's Messages API bodies as Cirrus accepts them (`POST /v1/messages` and
`POST /v1/messages/count_tokens`), checked before any provider call.

The shapes are Anthropic's (the `anthropic` SDK's `types/` are the reference). Unknown top-level
fields are refused with Anthropic's words ("<name>: Extra inputs are not permitted"), and fields
that would steer where Cirrus connects get the same refusal as on the OpenAI routes. Content
blocks and tools keep extra keys (`cache_control`, `citations`, ...): they are content for the
provider, not instructions to Cirrus. Answers are not modelled here: they are Anthropic's `Message`
and stream events, built as plain dicts (shared/services/messages).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.models.requests import STEERING_FIELDS, SteeringFieldError

ImageMediaType = Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
ToolName = Annotated[str, Field(min_length=1, max_length=128)]


class _Block(BaseModel):
    model_config = ConfigDict(extra="allow")


class Base64Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["base64"]
    media_type: ImageMediaType
    data: str = Field(min_length=1)


class URLSource(BaseModel):
    """An image the provider fetches; Cirrus never does."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["url"]
    url: str = Field(min_length=1, pattern=r"^https?://")


class TextBlock(_Block):
    type: Literal["text"]
    text: str


class ImageBlock(_Block):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]


class DocumentBlock(_Block):
    """A document (PDF or plain text), for the provider to read."""

    type: Literal["document"]
    source: dict[str, Any]


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: ToolName
    input: dict[str, Any]


ToolResultPart = Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[ToolResultPart] | None = None
    is_error: bool | None = None


class ThinkingBlock(_Block):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Block):
    type: Literal["redacted_thinking"]
    data: str


ContentBlock = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class InputMessage(BaseModel):
    """One turn. `system` turns mid-conversation are what Claude Code sends (a beta of Anthropic's)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class Tool(BaseModel):
    """A client tool (`type` absent or `custom`) or one of Anthropic's server tools (`bash_...`,
    `web_search_...`), which only Anthropic deployments can serve."""

    model_config = ConfigDict(extra="allow")

    type: str | None = None
    name: ToolName
    description: str | None = None
    input_schema: dict[str, Any] | None = None

    @property
    def is_custom(self) -> bool:
        return self.type in (None, "custom")

    @model_validator(mode="after")
    def _custom_tools_have_a_schema(self) -> Tool:
        if self.is_custom and self.input_schema is None:
            raise ValueError("a tool needs `input_schema`")
        return self


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["auto", "any", "tool", "none"]
    name: ToolName | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _tool_is_named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError("`tool_choice` of type `tool` needs `name`")
        return self


class Thinking(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=1)


class OutputConfig(BaseModel):
    """`effort` (`low`, `medium`, `high`, ...) and `format` (structured outputs)."""

    model_config = ConfigDict(extra="allow")

    effort: str | None = None
    format: dict[str, Any] | None = None


class Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(None, max_length=512)


class MessagesRequest(BaseModel):
    """What both Messages routes take; unknown top-level fields are refused."""

    # Extras are allowed only so the validator below can name them; the schema says they are refused.
    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": False})

    model: str = Field(min_length=1, max_length=256)
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    # Server-side context editing (clearing old thinking or tool results): Anthropic deployments only.
    context_management: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _no_unknown_fields(self) -> MessagesRequest:
        for name in self.model_extra or {}:
            if name in STEERING_FIELDS:
                raise SteeringFieldError(name)
            raise ExtraFieldError(name)
        return self

    def body(self) -> dict[str, Any]:
        """The fields the client set, as plain JSON: what an Anthropic deployment is sent."""
        return self.model_dump(mode="json", exclude_unset=True)


class MessageCreate(MessagesRequest):
    """`POST /v1/messages` body."""

    max_tokens: int = Field(ge=1)
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    metadata: Metadata | None = None


class CountTokensCreate(MessagesRequest):
    """`POST /v1/messages/count_tokens` body."""


class ExtraFieldError(ValueError):
    """An unknown top-level field, in Anthropic's words."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name}: Extra inputs are not permitted")
        self.name = name


class MessageUsage(BaseModel):
    model_config = ConfigDict(extra="allow")

    input_tokens: int
    output_tokens: int


class MessagePublic(BaseModel):
    """Anthropic's `Message`, as `POST /v1/messages` answers (built by shared/services/messages)."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[dict[str, Any]]
    stop_reason: str | None
    stop_sequence: str | None = None
    usage: MessageUsage


class TokenCount(BaseModel):
    """`POST /v1/messages/count_tokens`."""

    input_tokens: int
