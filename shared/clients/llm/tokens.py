"""Token counts with `tiktoken`, for budgets, history trimming and providers that report no usage.

Counts follow OpenAI's own recipe for chat messages (3 tokens per message, 1 per name, 3 to
prime the reply). Models tiktoken does not know are counted with `cl100k_base`, as LiteLLM does:
an estimate, which is all a budget hold or a missing usage report needs. Encodings load on first
use (0.1-0.2 s each) from the files LiteLLM ships, so nothing is fetched from the internet.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from shared.clients.llm.price_map import litellm_package_dir

DEFAULT_ENCODING = "cl100k_base"
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
IMAGE_TOKENS = 765  # a 1024x1024 image at high detail: generous, as budget holds should be


@functools.cache
def _encoding(name: str) -> Any:
    package = litellm_package_dir()
    if package is not None:  # tiktoken would otherwise download the encoding
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(package / "litellm_core_utils" / "tokenizers"))
    import tiktoken  # noqa: PLC0415 - loads native code and data; only when counting

    return tiktoken.get_encoding(name)


@functools.cache
def encoding_for(model: str) -> Any:
    """The tiktoken encoding of `model` (the provider's name, without `openai/`)."""
    import tiktoken.model  # noqa: PLC0415

    try:
        name = tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        name = DEFAULT_ENCODING
    return _encoding(name)


def count_text(model: str, text: str) -> int:
    return len(encoding_for(model).encode(text, disallowed_special=())) if text else 0


def count_messages(model: str, messages: Sequence[Mapping[str, Any]]) -> int:
    """Tokens of a chat prompt, by OpenAI's recipe."""
    encoding = encoding_for(model)
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if isinstance(value, str):
                total += len(encoding.encode(value, disallowed_special=()))
                if key == "name":
                    total += TOKENS_PER_NAME
            elif key == "content" and isinstance(value, list):
                total += _content_parts(encoding, value)
            elif key in ("tool_calls", "function_call") and value:
                total += len(encoding.encode(orjson.dumps(value).decode(), disallowed_special=()))
    return total


def _content_parts(encoding: Any, parts: Sequence[Any]) -> int:
    total = 0
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        if isinstance(part.get("text"), str):
            total += len(encoding.encode(part["text"], disallowed_special=()))
        elif part.get("type") in ("image_url", "input_image", "file", "input_audio"):
            total += IMAGE_TOKENS
    return total
