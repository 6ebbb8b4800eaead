"""Output schemas: each task's reply model as a strict JSON schema, narrowed to one input.

The schema is sent as `response_format` (`json_schema`, `strict: true`), so it keeps to the subset
every structured-output provider accepts; pydantic checks the same reply again in output.py.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from shared.models.analysis import ContentInput, DecisionInput
from shared.services.analysis.tasks import as_input, spec_for

_FOLDED = {
    "minimum": "≥ {}",
    "exclusiveMinimum": "> {}",
    "maximum": "≤ {}",
    "exclusiveMaximum": "< {}",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "minItems": "at least {} item(s)",
    "maxItems": "at most {} item(s)",
    "pattern": "matching {}",
}


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema in the subset every structured-output provider accepts in strict mode.

    Every property is required (optional ones are nullable), objects forbid extra properties, `$ref`s
    are inlined, and range/length keywords — rejected by some providers — become words in the
    description; pydantic still enforces them in parse_output.
    """
    root = model.model_json_schema(mode="validation")
    # Model docstrings are written for developers; only field descriptions are meant for the model.
    defs = {name: _without_description(d) for name, d in root.pop("$defs", {}).items()}
    return _strict(_without_description(root), defs)


def _without_description(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k != "description"}


def _strict(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        node = {**defs[node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    if isinstance(node.get("additionalProperties"), dict):
        raise TypeError("a free-form object cannot be strict; give it a fixed schema (WithJsonSchema)")
    out: dict[str, Any] = {}
    notes = []
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _strict(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _strict(value, defs)
        elif key == "anyOf":
            out[key] = [_strict(variant, defs) for variant in value]
        elif key in ("type", "enum", "description"):
            out[key] = value
    for key, words in _FOLDED.items():
        if key in node:
            notes.append("non-empty" if (key, node[key]) == ("minLength", 1) else words.format(node[key]))
    if out.get("type") == "object" or "properties" in out:
        out.setdefault("type", "object")
        out["required"] = list(out.setdefault("properties", {}))
        out["additionalProperties"] = False
    if notes:
        out["description"] = " ".join(filter(None, [out.get("description"), f"({', '.join(notes)})"]))
    return _collapse_nullable(out)


def _collapse_nullable(node: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [{type: string}, {type: null}]` → `type: [string, null]`, the form every provider reads."""
    variants = node.get("anyOf")
    if variants and all(set(v) == {"type"} and isinstance(v["type"], str) for v in variants):
        node = {k: v for k, v in node.items() if k != "anyOf"}
        node["type"] = [v["type"] for v in variants]
    return node


def _decision_schema(schema: dict[str, Any], inp: DecisionInput) -> None:
    # An enum is the one portable way to make the model copy an option exactly.
    schema["properties"]["chosen_option"]["enum"] = list(inp.options)
    schema["properties"]["scores"]["items"]["properties"]["option"]["enum"] = list(inp.options)


def _content_schema(schema: dict[str, Any], inp: ContentInput) -> None:
    variants = schema["properties"]["variants"]
    variants["description"] += f" Exactly {inp.variants}."


# How each task's schema narrows to one input (the rules that depend on it).
NARROW: dict[str, Callable[[dict[str, Any], Any], None]] = {
    "make_decision": _decision_schema,
    "generate_content": _content_schema,
}


@functools.cache
def _base_schema(task: str) -> dict[str, Any]:
    return strict_schema(spec_for(task).output_model)


def response_format(task: str, input: BaseModel | dict[str, Any] | None = None) -> dict[str, Any]:
    """The `json_schema` response_format for `task`, narrowed to `input` when given (option enums)."""
    spec = spec_for(task)
    schema = copy.deepcopy(_base_schema(task))
    if input is not None and (narrow := NARROW.get(task)):
        narrow(schema, as_input(spec, input))
    return {"type": "json_schema", "json_schema": {"name": task, "schema": schema, "strict": True}}
