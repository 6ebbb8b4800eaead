"""Deterministic "model output": reply text, word-based token counts, JSON examples, embeddings.

A "token" here is a whitespace-separated word. The default reply is
`Fake reply to: <first 60 chars of the prompt>` padded with filler words chosen by hashing
the request key (model, messages/prompt, seed) and the choice index, to `REPLY_WORDS` words.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Callable
from typing import Any

REPLY_WORDS = 24
SNIPPET_CHARS = 60
FILLER = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliett", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
)  # fmt: skip
_MAX_SCHEMA_DEPTH = 16


def canonical(value: Any) -> bytes:
    """Stable JSON encoding, used as hash input."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(*parts: Any) -> str:
    """Hex SHA-256 of the canonical encoding of `parts`."""
    return hashlib.sha256(canonical(parts)).hexdigest()


def count_words(text: str) -> int:
    """Token count of `text` (whitespace-separated words)."""
    return len(text.split())


def split_pieces(text: str) -> list[str]:
    """Split text into one piece per word (with the whitespace before it); they join to `text`."""
    pieces = re.findall(r"\s*\S+(?:\s+$)?", text)
    return pieces or ([text] if text else [])


def default_reply(prompt: str, key: str, index: int) -> str:
    """The generated reply to `prompt` for choice `index` of the request identified by `key`."""
    words = f"Fake reply to: {prompt[:SNIPPET_CHARS]}".split()
    missing = max(0, REPLY_WORDS - len(words))
    noise = hashlib.shake_256(f"{key}:{index}".encode()).digest(missing)
    return " ".join(words + [FILLER[b % len(FILLER)] for b in noise])


def truncate(text: str, stop: list[str], max_words: int | None) -> tuple[str, str]:
    """Apply stop sequences and a word cap; returns (text, finish_reason)."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    if cuts:
        text = text[: min(cuts)]
    pieces = split_pieces(text)
    if max_words is not None and len(pieces) > max_words:
        return "".join(pieces[:max_words]), "length"
    return text, "stop"


def example_for_schema(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A minimal instance of a JSON schema: required properties only, first enum/anyOf option."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if depth > _MAX_SCHEMA_DEPTH:
        return None
    if "const" in schema or schema.get("enum"):
        return schema["const"] if "const" in schema else schema["enum"][0]
    kind = schema.get("type", "object" if "properties" in schema else None)
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {
            name: example_for_schema(properties.get(name, {}), root, depth + 1)
            for name in schema.get("required", [])
        }
    if kind == "array":
        item = example_for_schema(schema.get("items", {}), root, depth + 1)
        return [item] * int(schema.get("minItems", 0))
    scalar = _SCALAR_EXAMPLES.get(kind)
    return scalar(schema) if scalar else None


def _resolve(schema: Any, root: Any) -> dict[str, Any]:
    """Follow `$ref`, pick an `anyOf`/`oneOf` option and flatten `allOf` down to a plain schema."""
    for _ in range(_MAX_SCHEMA_DEPTH):
        if not isinstance(schema, dict):
            return {}
        if isinstance(schema.get("$ref"), str):
            schema = _lookup(root, schema["$ref"])
        elif schema.get("anyOf") or schema.get("oneOf"):
            options = schema.get("anyOf") or schema["oneOf"]
            schema = next((o for o in options if _not_null(o)), options[0])
        elif schema.get("allOf"):
            schema = _flatten_all_of(schema, root)
        else:
            return schema
    return {}


def _not_null(schema: Any) -> bool:
    return not (isinstance(schema, dict) and schema.get("type") == "null")


def _lookup(root: Any, ref: str) -> Any:
    """The target of a local JSON pointer such as `#/$defs/Item` ({} when missing)."""
    if not ref.startswith("#"):
        return {}
    target = root
    for part in filter(None, ref[1:].split("/")):
        key = part.replace("~1", "/").replace("~0", "~")
        target = target.get(key, {}) if isinstance(target, dict) else {}
    return target


def _flatten_all_of(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for part in (_resolve(p, root) for p in schema["allOf"]):
        properties = {**merged.get("properties", {}), **part.get("properties", {})}
        required = [*merged.get("required", []), *part.get("required", [])]
        merged.update(part, properties=properties, required=required)
    return merged


def _example_number(schema: dict[str, Any]) -> float:
    """0, moved into [minimum, maximum] when the schema requires it."""
    value: float = 0
    exclusive_min = schema.get("exclusiveMinimum")
    if isinstance(schema.get("minimum"), int | float):
        value = max(value, schema["minimum"])
    elif isinstance(exclusive_min, int | float) and not isinstance(exclusive_min, bool):
        value = max(value, exclusive_min + 1)
    if isinstance(schema.get("maximum"), int | float):
        value = min(value, schema["maximum"])
    return value


_SCALAR_EXAMPLES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "string": lambda schema: "fake".ljust(int(schema.get("minLength", 0)), "x"),
    "integer": lambda schema: math.ceil(_example_number(schema)),
    "number": _example_number,
    "boolean": lambda _: False,
}


def embedding(key: str, dimensions: int) -> list[float]:
    """A deterministic unit vector, already rounded to float32 so base64 and float agree."""
    raw = hashlib.shake_256(key.encode()).digest(4 * dimensions)
    values = [n / 2**31 - 1 for n in struct.unpack(f"<{dimensions}I", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))
