"""OpenAI wire format: request models, errors, and response / stream-chunk builders."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .behaviour import Behaviour
from .generate import (
    count_words,
    default_reply,
    digest,
    embedding,
    example_for_schema,
    split_pieces,
    truncate,
)

FINGERPRINT = "fp_fakeprovider"
MODELS_CREATED = 1_700_000_000
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "fake-model")
DEFAULT_DIMENSIONS = 8
_FAULT_MESSAGES = {
    429: "Rate limit reached for requests (fake provider).",
    500: "The server had an error while processing your request (fake provider).",
    503: "The server is overloaded or not ready yet (fake provider).",
}


# --- errors -------------------------------------------------------------------------------


class ApiError(Exception):
    """A failure to report in OpenAI's error envelope (or, with `azure`, Azure's shorter one)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        azure: bool = False,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.azure = azure

    def body(self) -> dict[str, Any]:
        """The `ErrorResponse` JSON body."""
        if self.azure:
            return azure_error_body(self.status, self.message)
        return error_body(self.status, self.message, param=self.param, code=self.code)


def error_body(
    status: int, message: str | None = None, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's `{"error": {...}}` envelope for an HTTP status."""
    if status == 429:
        kind, code = "requests", code or "rate_limit_exceeded"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    message = message or _FAULT_MESSAGES.get(status, f"Fake provider error {status}.")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def azure_error_body(status: int, message: str) -> dict[str, Any]:
    """Azure OpenAI's gateway envelope, e.g. `{"error": {"code": "404", "message": "Resource not found"}}`."""
    return {"error": {"code": str(status), "message": message}}


# --- requests -----------------------------------------------------------------------------


class _ApiRequest(BaseModel):
    # Unknown parameters are accepted and ignored, like a lenient provider.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class _GenerationRequest(_ApiRequest):
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = Field(default=None, max_length=64)  # OpenAI refuses a longer one with a 400

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(_GenerationRequest):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str] | list[int] | list[list[int]]


class EmbeddingRequest(_ApiRequest):
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = Field(default=None, ge=1, le=8192)
    encoding_format: Literal["float", "base64"] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> EmbeddingRequest:
        items = [self.input] if isinstance(self.input, str) else self.input
        if not items or any(not item for item in items if not isinstance(item, int)):
            raise ValueError("'input' must not be empty")
        return self


def parse_request[RequestT: BaseModel](cls: type[RequestT], body: Any) -> RequestT:
    """Validate a request body, raising a 400 `ApiError` like OpenAI does."""
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = str(error["loc"][0]) if error["loc"] else None
        if error["type"] == "missing":
            message, code = f"Missing required parameter: '{param}'.", "missing_required_parameter"
        else:
            message, code = f"Invalid value for '{param}': {error['msg']}.", "invalid_value"
        raise ApiError(400, message, param=param, code=code) from None


# --- generation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """One generated choice: reply text, or tool calls in wire format."""

    index: int
    finish_reason: str
    text: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()

    @property
    def tokens(self) -> int:
        if self.text is not None:
            return count_words(self.text)
        return sum(
            count_words(c["function"]["name"]) + count_words(c["function"]["arguments"])
            for c in self.tool_calls
        )


def message_text(content: Any) -> str:
    """Text of a message `content` (a string or a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p.get("text") for p in content if isinstance(p, dict))
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def chat_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(count_words(message_text(m.get("content"))) for m in messages)


def chat_choices(req: ChatRequest, behaviour: Behaviour) -> list[Choice]:
    """The choices for a chat request; the text depends only on model, messages and seed."""
    key = digest(req.model, req.messages, req.seed)
    calls = _tool_calls(req, behaviour)
    max_words = req.max_completion_tokens or req.max_tokens
    choices = []
    for index in range(req.n or 1):
        if calls:
            wire = tuple(
                {
                    "id": f"call_{digest(key, index, i)[:24]}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
                for i, (name, arguments) in enumerate(calls)
            )
            choices.append(Choice(index, "tool_calls", tool_calls=wire))
        else:
            text, finish = truncate(_chat_text(req, behaviour, key, index), req.stops, max_words)
            choices.append(Choice(index, finish, text=text))
    return choices


def _chat_text(req: ChatRequest, behaviour: Behaviour, key: str, index: int) -> str:
    if behaviour.reply is not None:
        return behaviour.reply
    response_format = req.response_format or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return json.dumps(example_for_schema(schema), ensure_ascii=False)
    user = [m for m in req.messages if m.get("role") == "user"]
    reply = default_reply(message_text(user[-1].get("content")) if user else "", key, index)
    if response_format.get("type") == "json_object":
        return json.dumps({"reply": reply}, ensure_ascii=False)
    return reply


def _tool_calls(req: ChatRequest, behaviour: Behaviour) -> list[tuple[str, str]]:
    """(name, JSON arguments) pairs: scripted ones, else the tool `tool_choice` forces."""
    if behaviour.tool_calls:
        return [(c.name, json.dumps(c.arguments, ensure_ascii=False)) for c in behaviour.tool_calls]
    functions = [t.get("function") or {} for t in req.tools or [] if t.get("type") == "function"]
    choice = req.tool_choice
    if choice == "required" and functions:
        forced = functions[0]
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        forced = next((f for f in functions if f.get("name") == name), {"name": name})
    else:
        return []
    arguments = example_for_schema(forced.get("parameters") or {"type": "object"})
    return [(str(forced.get("name")), json.dumps(arguments, ensure_ascii=False))]


def _prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[tuple[str, int]]:
    """(text, token count) per prompt; token-id prompts are rendered as their numbers."""
    if isinstance(prompt, str):
        return [(prompt, count_words(prompt))]
    if prompt and all(isinstance(t, int) for t in prompt):
        return [(" ".join(map(str, prompt)), len(prompt))]
    items: list[tuple[str, int]] = []
    for item in prompt:
        if isinstance(item, str):
            items.append((item, count_words(item)))
        elif isinstance(item, list):
            items.append((" ".join(map(str, item)), len(item)))
    return items or [("", 0)]


def completion_choices(req: CompletionRequest, behaviour: Behaviour) -> tuple[list[Choice], int]:
    """Choices (n per prompt) and prompt tokens for a legacy completion request."""
    key = digest(req.model, req.prompt, req.seed)
    prompts = _prompts(req.prompt)
    n = req.n or 1
    choices = []
    for p, (prompt, _) in enumerate(prompts):
        for index in range(p * n, (p + 1) * n):
            reply = behaviour.reply
            if reply is None:
                reply = default_reply(prompt, key, index)
            text, finish = truncate(reply, req.stops, req.max_tokens)
            choices.append(Choice(index, finish, text=text))
    return choices, sum(tokens for _, tokens in prompts)


# --- responses ----------------------------------------------------------------------------


def response_base(prefix: str, model: str, *identity: Any) -> dict[str, Any]:
    """Fields shared by a response and all its chunks; the id is a hash of `identity`."""
    return {
        "id": f"{prefix}-{digest(*identity)[:29]}",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": FINGERPRINT,
    }


def usage(prompt_tokens: int, choices: list[Choice]) -> dict[str, int]:
    completion = sum(c.tokens for c in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


def chat_completion(base: dict[str, Any], choices: list[Choice], usage: dict[str, int]) -> dict[str, Any]:
    """A `CreateChatCompletionResponse`; `base` holds id, created, model, system_fingerprint."""

    def message(choice: Choice) -> dict[str, Any]:
        body: dict[str, Any] = {"role": "assistant", "content": choice.text, "refusal": None}
        if choice.tool_calls:
            body["tool_calls"] = list(choice.tool_calls)
        return body

    return {
        **base,
        "object": "chat.completion",
        "choices": [
            {
                "index": c.index,
                "message": message(c),
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
            for c in choices
        ],
        "usage": usage,
    }


def chat_chunks(
    base: dict[str, Any],
    choices: list[Choice],
    usage: dict[str, int],
    *,
    tokens_per_chunk: int,
    include_usage: bool,
) -> Iterator[dict[str, Any]]:
    """`CreateChatCompletionStreamResponse` chunks, one choice per chunk, choices interleaved."""

    def chunk(index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        body = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:  # OpenAI sends `usage: null` on every chunk but the last
            body["usage"] = None
        return body

    def choice_chunks(choice: Choice) -> Iterator[dict[str, Any]]:
        for delta, finish in _chat_deltas(choice, tokens_per_chunk):
            yield chunk(choice.index, delta, finish)

    for step in zip_longest(*(choice_chunks(c) for c in choices)):
        yield from (item for item in step if item is not None)
    if include_usage:
        yield {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}


def _groups(text: str, size: int) -> Iterator[str]:
    pieces = split_pieces(text)
    return ("".join(pieces[i : i + size]) for i in range(0, len(pieces), size))


def _chat_deltas(choice: Choice, size: int) -> Iterator[tuple[dict[str, Any], str | None]]:
    """(delta, finish_reason) for one choice, as OpenAI streams text and tool calls."""
    if choice.text is not None:
        yield {"role": "assistant", "content": "", "refusal": None}, None
        for content in _groups(choice.text, size):
            yield {"content": content}, None
    for i, call in enumerate(choice.tool_calls):
        head = {
            "index": i,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        delta: dict[str, Any] = {"tool_calls": [head]}
        if i == 0:
            delta = {"role": "assistant", "content": None, "refusal": None, **delta}
        yield delta, None
        for fragment in _groups(call["function"]["arguments"], size):
            yield {"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}, None
    yield {}, choice.finish_reason


def text_completion(base: dict[str, Any], choices: list[Choice], usage: dict[str, int]) -> dict[str, Any]:
    """A legacy `CreateCompletionResponse`."""
    return {
        **base,
        "object": "text_completion",
        "choices": [
            {"text": c.text, "index": c.index, "logprobs": None, "finish_reason": c.finish_reason}
            for c in choices
        ],
        "usage": usage,
    }


def text_completion_chunks(
    base: dict[str, Any],
    choices: list[Choice],
    usage: dict[str, int],
    *,
    tokens_per_chunk: int,
    include_usage: bool,
) -> Iterator[dict[str, Any]]:
    """Legacy completion stream chunks (same shape as the response), choices interleaved."""

    def chunk(choice: dict[str, Any]) -> dict[str, Any]:
        body = {**base, "object": "text_completion", "choices": [choice]}
        if include_usage:
            body["usage"] = None
        return body

    def deltas(c: Choice) -> Iterator[dict[str, Any]]:
        for text in _groups(c.text or "", tokens_per_chunk):
            yield chunk({"text": text, "index": c.index, "logprobs": None, "finish_reason": None})
        yield chunk({"text": "", "index": c.index, "logprobs": None, "finish_reason": c.finish_reason})

    for step in zip_longest(*(deltas(c) for c in choices)):
        yield from (item for item in step if item is not None)
    if include_usage:
        yield {**base, "object": "text_completion", "choices": [], "usage": usage}


def embeddings(req: EmbeddingRequest) -> dict[str, Any]:
    """A `CreateEmbeddingResponse`: one deterministic unit vector per input (model + input)."""
    raw = req.input
    items: list[Any] = [raw] if isinstance(raw, str) or all(isinstance(t, int) for t in raw) else list(raw)
    dimensions = req.dimensions or DEFAULT_DIMENSIONS
    data = []
    for index, item in enumerate(items):
        vector = embedding(digest(req.model, item), dimensions)
        value: Any = vector
        if req.encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = sum(count_words(i) if isinstance(i, str) else len(i) for i in items)
    return {
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def model_object(model_id: str) -> dict[str, Any]:
    """A `Model` object."""
    return {"id": model_id, "object": "model", "created": MODELS_CREATED, "owned_by": "fake-provider"}
