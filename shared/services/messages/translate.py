"""Anthropic's Messages ⇄ OpenAI's chat completions: how every model in the file serves
`/v1/messages`. Pure functions over plain dicts and the request models.

A request (`to_chat`):

    system (a string, or text blocks)       a first `system` message (blocks joined by a blank line)
    a `system` turn mid-conversation        a `system` message where it stands
    text block                              a text part (a lone text block: plain string content)
    image block, base64 or url              an `image_url` part: a `data:` URL, or the URL itself (the
                                            provider fetches it; Cirrus never does)
    document block, base64 PDF or text      a `file` part (`data:` URL), or a text part
    tool_use block (assistant)              a `tool_calls` entry, `input` as JSON `arguments`
    tool_result block (user)                a `tool` message (before the rest of the turn); text parts
                                            joined by newlines, `is_error` as an "Error: " prefix; its
                                            images and documents follow in a `user` message
    thinking, redacted_thinking blocks      dropped: a chat has no place for them
    tools (client tools)                    function tools, `input_schema` as `parameters`
    server tools (`bash_…`, `web_search_…`) 400: only Anthropic deployments run them
    tool_choice auto, any, tool, none       auto, required, that function, none;
                                            `disable_parallel_tool_use` → `parallel_tool_calls: false`
    max_tokens                              max_tokens, or max_completion_tokens for a model that reasons
    temperature, top_p                      the same fields
    stop_sequences                          stop (at most 4, OpenAI's limit: more → 400)
    metadata.user_id                        user; one longer than OpenAI's 64 characters (Claude
                                            Code sends a JSON object of ~150) as its SHA-256 in hex
    thinking, output_config.effort          reasoning_effort, when every deployment of the model
                                            reasons (the price map's `supports_reasoning`); else dropped
    output_config.format (json_schema)      response_format json_schema
    top_k, context_management, cache_control dropped

An answer (`from_chat`): the text (or refusal) becomes a text block and each tool call a
tool_use block (`arguments` parsed into `input`); finish_reason stop → end_turn (stop_sequence when
the provider names the stop string it hit, as vLLM does in `stop_reason`), length → max_tokens,
tool_calls → tool_use, content_filter → refusal; usage prompt_tokens (less cached ones) →
input_tokens, cached prompt tokens → cache_read_input_tokens, completion_tokens → output_tokens.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from shared.errors import InvalidRequestError
from shared.models.messages import (
    ContentBlock,
    DocumentBlock,
    ImageBlock,
    InputMessage,
    MessageCreate,
    MessagesRequest,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)

MAX_CHAT_STOPS = 4  # OpenAI's limit on `stop`
MAX_CHAT_USER = 64  # OpenAI's limit on `user`: a longer one is a 400
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Anthropic's efforts to OpenAI's `reasoning_effort`.
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
Part = dict[str, Any]


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


# --- requests -----------------------------------------------------------------------------


def to_chat(request: MessageCreate, *, reasoning: bool = False) -> dict[str, Any]:
    """Chat completion parameters for a Messages request; `reasoning`: the model takes
    `reasoning_effort`. Raises InvalidRequestError for what no chat model can do."""
    params: dict[str, Any] = {
        "model": request.model,
        "messages": chat_messages(request),
        output_cap(reasoning): request.max_tokens,
    }
    if request.stream:
        params["stream"] = True
        params["stream_options"] = {"include_usage": True}  # the usage goes into message_delta
    for name in ("temperature", "top_p"):
        if (value := getattr(request, name)) is not None:
            params[name] = value
    if request.stop_sequences:
        if len(request.stop_sequences) > MAX_CHAT_STOPS:
            raise InvalidRequestError(
                f"stop_sequences: at most {MAX_CHAT_STOPS} for this model (only Anthropic models take more).",
                param="stop_sequences",
            )
        params["stop"] = list(request.stop_sequences)
    if request.metadata and request.metadata.user_id:
        params["user"] = chat_user(request.metadata.user_id)
    if request.tools:
        params["tools"] = [_function_tool(tool) for tool in request.tools]
    if request.tool_choice is not None:
        _tool_choice(request, params)
    if reasoning and (effort := _effort(request)):
        params["reasoning_effort"] = effort
    schema_format = (request.output_config.format or {}) if request.output_config else {}
    if schema_format.get("type") == "json_schema" and isinstance(schema_format.get("schema"), dict):
        params["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema_format["schema"]},
        }
    return params


def output_cap(reasoning: bool) -> str:
    """The chat parameter `max_tokens` becomes: OpenAI's reasoning models (o-series, gpt-5) refuse
    `max_tokens` and take only `max_completion_tokens`; many other servers know only `max_tokens`."""
    return "max_completion_tokens" if reasoning else "max_tokens"


def chat_user(user_id: str) -> str:
    """`metadata.user_id` as a chat `user`: itself, or when too long for OpenAI its SHA-256 (64 hex
    digits), still one stable id per user."""
    if len(user_id) <= MAX_CHAT_USER:
        return user_id
    return hashlib.sha256(user_id.encode()).hexdigest()


def chat_messages(request: MessagesRequest) -> list[dict[str, Any]]:
    """The conversation as chat messages, the system prompt first."""
    out: list[dict[str, Any]] = []
    if isinstance(request.system, str) and request.system:
        out.append({"role": "system", "content": request.system})
    elif isinstance(request.system, list) and request.system:
        out.append({"role": "system", "content": "\n\n".join(block.text for block in request.system)})
    for message in request.messages:
        out.extend(_messages(message))
    return out


def _messages(message: InputMessage) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    if message.role == "assistant":
        return _assistant(message.content)
    out: list[dict[str, Any]] = []
    parts: list[Part] = []
    for block in message.content:
        if isinstance(block, ToolResultBlock):
            text, attached = _tool_result(block)
            out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
            parts.extend(attached)
        elif (part := _part(block)) is not None:
            parts.append(part)
    if parts:
        if message.role == "system":
            out.append({"role": "system", "content": "\n\n".join(p.get("text", "") for p in parts)})
        else:
            out.append({"role": message.role, "content": _content(parts)})
    return out


def _assistant(blocks: Sequence[ContentBlock]) -> list[dict[str, Any]]:
    texts = [block.text for block in blocks if isinstance(block, TextBlock)]
    calls = [
        {
            "id": block.id,
            "type": "function",
            "function": {"name": block.name, "arguments": orjson.dumps(block.input).decode()},
        }
        for block in blocks
        if isinstance(block, ToolUseBlock)
    ]
    if not texts and not calls:  # only thinking: nothing a chat model can be shown
        return []
    message: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _tool_result(block: ToolResultBlock) -> tuple[str, list[Part]]:
    """The tool message's text, and the images and documents that must follow it as user content."""
    attached: list[Part] = []
    if isinstance(block.content, str):
        text = block.content
    else:
        texts: list[str] = []
        for item in block.content or ():
            if isinstance(item, TextBlock):
                texts.append(item.text)
            elif (part := _part(item)) is not None:
                attached.append(part)
        text = "\n".join(texts)
    if block.is_error:
        text = f"Error: {text}" if text else "Error"
    return text, attached


def _part(block: ContentBlock) -> Part | None:
    """A chat content part for a user's (or system turn's) block; None for one a chat drops."""
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ImageBlock):
        source = block.source
        url = source.url if source.type == "url" else f"data:{source.media_type};base64,{source.data}"
        return {"type": "image_url", "image_url": {"url": url}}
    if isinstance(block, DocumentBlock):
        return _document(block)
    if isinstance(block, ToolUseBlock):
        raise InvalidRequestError("tool_use blocks belong in assistant turns.", param="messages")
    return None  # thinking, redacted_thinking


def _document(block: DocumentBlock) -> Part:
    source = block.source
    kind, media_type = source.get("type"), source.get("media_type")
    if kind == "base64" and media_type == "application/pdf" and isinstance(source.get("data"), str):
        title = block.model_extra.get("title") if block.model_extra else None
        data = f"data:{media_type};base64,{source['data']}"
        return {"type": "file", "file": {"filename": str(title or "document.pdf"), "file_data": data}}
    if kind == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    raise InvalidRequestError(
        "This model reads documents given as base64 PDF or plain text only; other document "
        "sources are served by Anthropic models.",
        param="messages",
    )


def _content(parts: list[Part]) -> str | list[Part]:
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _function_tool(tool: Any) -> dict[str, Any]:
    if not tool.is_custom:
        raise InvalidRequestError(
            f"tools: `{tool.type}` is one of Anthropic's server tools; only Anthropic models run them.",
            param="tools",
        )
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _tool_choice(request: MessageCreate, params: dict[str, Any]) -> None:
    choice = request.tool_choice
    assert choice is not None
    if choice.type == "auto":
        params["tool_choice"] = "auto"
    elif choice.type == "any":
        params["tool_choice"] = "required"
    elif choice.type == "none":
        params["tool_choice"] = "none"
    else:
        params["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    if choice.disable_parallel_tool_use and request.tools:
        params["parallel_tool_calls"] = False


def _effort(request: MessageCreate) -> str | None:
    if request.output_config and request.output_config.effort:
        return _EFFORTS.get(request.output_config.effort)
    thinking = request.thinking
    if thinking is None or thinking.type != "enabled" or not thinking.budget_tokens:
        return None
    budget = thinking.budget_tokens
    return "low" if budget <= 4096 else "medium" if budget <= 16384 else "high"


# --- answers ------------------------------------------------------------------------------


def from_chat(
    completion: Mapping[str, Any],
    *,
    stop_sequences: Sequence[str] | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """Anthropic's `Message` for a chat completion (its first choice)."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = _text(message.get("content"))
    refusal = message.get("refusal")
    if text:
        content.append({"type": "text", "text": text})
    elif refusal:
        content.append({"type": "text", "text": str(refusal)})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": function.get("name") or "",
                "input": tool_input(function.get("arguments")),
            }
        )
    reason, sequence = stop_reason(choice.get("finish_reason"), choice.get("stop_reason"), stop_sequences)
    if reason == "end_turn" and any(block["type"] == "tool_use" for block in content):
        reason = "tool_use"  # some servers finish a tool call with `stop`
    if refusal and not text:
        reason = "refusal"
    return {
        "id": message_id or new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": message_usage(completion.get("usage")),
    }


def stop_reason(
    finish_reason: Any, matched: Any = None, stop_sequences: Sequence[str] | None = None
) -> tuple[str, str | None]:
    """Anthropic's (stop_reason, stop_sequence) for a chat finish_reason; `matched` is the stop
    string the provider says it hit (vLLM's `stop_reason`), if any."""
    if finish_reason == "stop" and isinstance(matched, str) and matched in (stop_sequences or ()):
        return "stop_sequence", matched
    return _STOP_REASONS.get(str(finish_reason or "stop"), "end_turn"), None


def message_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Anthropic's usage for a chat usage: its input_tokens leave out tokens read from a cache."""
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(usage.get("cache_read_input_tokens") or details.get("cached_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    return {
        "input_tokens": max(0, prompt - cached - written),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
    }


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's JSON arguments as the object Anthropic's `input` is ({} if they are not one)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, Mapping))
    return ""
