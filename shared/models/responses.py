"""The Responses API's request as Cirrus accepts it, and the stored record of a response.

Cirrus serves `/v1/responses` for every model by translating to chat completions
(shared/services/responses/translate.py), so it accepts what it can translate: text, image and
file input, `function_call` and `function_call_output` items, and function tools. Anything else
(built-in tools such as web search, item references, conversations, prompts) is refused with a
400 that names it, never dropped in silence. Reasoning items sent back by a client carry nothing
a chat model can read and are skipped.

Why not `openai.types.responses`: those are TypedDicts and SDK models; the app never imports the
`openai` package (tests/unit/test_function_app.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

from shared.models.requests import OpenAIRequest

MAX_INPUT_ITEMS = 2048  # as chat's CIRRUS_MAX_MESSAGES default
Role = Literal["user", "assistant", "system", "developer"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]
ResponseStatus = Literal["queued", "in_progress", "completed", "failed", "cancelled", "incomplete"]
ENDED = frozenset({"completed", "failed", "cancelled", "incomplete"})


class _Part(BaseModel):
    # Parts and items keep keys Cirrus does not read (`prompt_cache_breakpoint`, ...): they are
    # content, not instructions, and are left out when the item is stored.
    model_config = ConfigDict(extra="allow")


class InputText(_Part):
    type: Literal["input_text"]
    text: str


class OutputText(_Part):
    type: Literal["output_text"]
    text: str


class RefusalPart(_Part):
    type: Literal["refusal"]
    refusal: str


class InputImage(_Part):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto", "original"] | None = None

    @model_validator(mode="after")
    def _url(self) -> InputImage:
        if not self.image_url:
            raise ValueError(
                "Cirrus needs `image_url` (an https URL or a data: URL) for an image; `file_id` images are "
                "not supported"
            )
        return self


class InputFile(_Part):
    type: Literal["input_file"]
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None

    @model_validator(mode="after")
    def _content(self) -> InputFile:
        # A provider cannot read Cirrus's file ids, and Cirrus fetches no URLs for a model.
        if not self.file_data or self.file_id:
            raise ValueError(
                "Cirrus needs the file's content in `file_data` (a data: URL); `file_id` and `file_url` "
                "are not supported"
            )
        return self


PART_TYPES = {
    "input_text": "InputText",
    "output_text": "OutputText",
    "refusal": "Refusal",
    "input_image": "InputImage",
    "input_file": "InputFile",
}


def _part_type(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return PART_TYPES.get(str(kind))


# Tags are capitalised so an error's `param` reads `input[0].content[1]` (validation.param_path).
ContentPart = Annotated[
    Annotated[InputText, Tag("InputText")]
    | Annotated[OutputText, Tag("OutputText")]
    | Annotated[RefusalPart, Tag("Refusal")]
    | Annotated[InputImage, Tag("InputImage")]
    | Annotated[InputFile, Tag("InputFile")],
    Discriminator(
        _part_type,
        custom_error_type="unsupported_part",
        custom_error_message=(
            "a content part's type is one of input_text, output_text, refusal, input_image and input_file"
        ),
    ),
]


class MessageItem(_Part):
    """A message: the easy form (`{role, content}`) or the item form (`type: message`)."""

    type: Literal["message"] = "message"
    id: str | None = Field(None, max_length=128)
    role: Role
    content: str | list[ContentPart]
    status: ItemStatus | None = None

    @model_validator(mode="after")
    def _parts_for_role(self) -> MessageItem:
        if isinstance(self.content, list):
            wrong = (RefusalPart, OutputText) if self.role != "assistant" else (InputImage, InputFile)
            for index, part in enumerate(self.content):
                if isinstance(part, wrong):
                    raise ValueError(f"content[{index}]: a `{self.role}` message cannot hold `{part.type}`")
        return self


class FunctionCallItem(_Part):
    """A function call the model made, sent back as part of the conversation."""

    type: Literal["function_call"]
    id: str | None = Field(None, max_length=128)
    call_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=128)
    arguments: str
    status: ItemStatus | None = None


class FunctionCallOutputItem(_Part):
    """The client's result of a function call: text, or `input_text` parts (a chat tool message
    holds text only, so image and file parts are refused)."""

    type: Literal["function_call_output"]
    id: str | None = Field(None, max_length=128)
    call_id: str = Field(min_length=1, max_length=128)
    output: str | list[InputText]
    status: ItemStatus | None = None


class ReasoningItem(_Part):
    """Reasoning a model produced elsewhere: accepted so conversations can move, not sent on."""

    type: Literal["reasoning"]


ITEM_TYPES = {
    "message": "Message",
    "function_call": "FunctionCall",
    "function_call_output": "FunctionCallOutput",
    "reasoning": "Reasoning",
}


def _item_type(value: Any) -> str | None:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", None)
    return ITEM_TYPES.get(str(kind))


InputItem = Annotated[
    Annotated[MessageItem, Tag("Message")]
    | Annotated[FunctionCallItem, Tag("FunctionCall")]
    | Annotated[FunctionCallOutputItem, Tag("FunctionCallOutput")]
    | Annotated[ReasoningItem, Tag("Reasoning")],
    Discriminator(
        _item_type,
        custom_error_type="unsupported_item",
        custom_error_message=(
            "Cirrus accepts input items of type message, function_call, function_call_output and "
            "reasoning (item references and built-in tool calls are not supported)"
        ),
    ),
]


class FunctionTool(BaseModel):
    """Responses' flat function tool: `{type: function, name, description, parameters, strict}`."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: str = Field(min_length=1)


class ToolChoiceAllowed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


ToolChoice = (
    Literal["none", "auto", "required"]
    | Annotated[ToolChoiceFunction | ToolChoiceAllowed, Field(discriminator="type")]
)


class TextFormat(BaseModel):
    """`text.format`: plain text, JSON mode, or a JSON schema (Structured Outputs)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema(self) -> TextFormat:
        if self.type == "json_schema" and (self.schema_ is None or not self.name):
            raise ValueError("a `json_schema` format needs `name` and `schema`")
        return self


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class ResponseCreate(OpenAIRequest):
    """`POST /v1/responses` body. Everything not set by the client stays unset."""

    input: (
        Annotated[str, StringConstraints(min_length=1)]
        | Annotated[list[InputItem], Field(min_length=1, max_length=MAX_INPUT_ITEMS)]
    )
    instructions: str | None = None
    previous_response_id: str | None = Field(None, max_length=128)
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_output_tokens: int | None = Field(None, ge=16)
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = Field(None, max_length=16)
    user: Annotated[str, StringConstraints(max_length=512)] | None = None
    safety_identifier: Annotated[str, StringConstraints(max_length=64)] | None = None
    prompt_cache_key: Annotated[str, StringConstraints(max_length=512)] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    store: bool | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    # Not in OpenAI's published spec, but its API takes it and Codex CLI sends it on every turn
    # (session and turn ids): accepted and not passed on, as it is the client's bookkeeping.
    client_metadata: dict[str, Any] | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    background: bool | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _some_input(cls, value: Any) -> Any:
        if value in ([], ""):
            raise ValueError("must not be empty")
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _function_tools_only(cls, value: Any) -> Any:
        for index, tool in enumerate(value if isinstance(value, list) else []):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise ValueError(
                    f"tools[{index}] is of type {kind!r}: Cirrus runs function tools only (built-in tools "
                    "such as web search, file search or code interpreter are OpenAI's own)"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ResponseCreate:
        if self.background and self.store is False:
            raise ValueError("a background response must be stored: `background: true` needs `store: true`")
        return self

    @property
    def stored(self) -> bool:
        return self.store is not False

    def items(self) -> list[InputItem]:
        """The input as items: a string is one user message."""
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)


class ResponseRecord(BaseModel):
    """The Cosmos item (`responses`, partitioned by its id) of a stored response.

    `request` is the create body without `input`; `input_items` are this request's own input items
    as stored (with ids), or in the blob `input_blob` when they would make the item too large; the
    conversation before them is `chain`'s responses, each one's input then output. `output`,
    `usage`, `error` and `incomplete_details` are the Response's own fields."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str
    pk: str
    object: Literal["response"] = "response"
    owner: str
    team: str | None = None
    model: str
    status: ResponseStatus
    created_at: float
    completed_at: float | None = None
    background: bool = False
    job_id: str | None = None
    previous_response_id: str | None = None
    # The conversation's earlier responses, oldest first (ids only, at most MAX_CHAIN), so they
    # are read at once instead of one previous_response_id after another.
    chain: list[str] = Field(default_factory=list)
    request: dict[str, Any]
    input_items: list[dict[str, Any]] = Field(default_factory=list)
    input_blob: str | None = None
    output: list[dict[str, Any]] = Field(default_factory=list)
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    ttl: int | None = None
    etag: str | None = Field(None, alias="_etag", exclude=True)
