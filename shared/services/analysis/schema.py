"""Output schemas: each task's reply model as a strict JSON schema, narrowed to one input.

The schema is sent as `response_format` (`json_schema`, `strict: true`), so it keeps to the subset
every structured-output provider accepts; pydantic checks the same reply again in output.py.

A rule that depends on the input belongs in the schema whenever that subset can say it, so a model
that follows the schema (as strict mode makes real models do, and as the local fake model does)
writes a valid reply: the chosen option is an enum of the options, every option is a required
property of `scores`, every variant a required property of `variants`, and session and tool names
in event notes are enums of the names in the events.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from shared.models.analysis import ContentInput, DecisionInput, EventsInput, variant_names
from shared.services.analysis.statistics import event_names
from shared.services.analysis.tasks import as_input, spec_for

_FOLDED = {
    "minimum": "≥ {}",
    "exclusiveMinimum": "> {}",
    "maximum": "≤ {}",
    "exclusiveMaximum": "< {}",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "minItems": "at least {} item(s)",  # except minItems 1, which stays a keyword (see _KEPT)
    "maxItems": "at most {} item(s)",
    "pattern": "matching {}",
}
# `minItems: 1` ("not empty") is the one length keyword every strict-mode provider accepts
# (Anthropic takes 0 or 1 only); it makes "at least one action" part of the schema.
_KEPT = {("minItems", 1)}
# Enums of names from the input stay well inside providers' limits (OpenAI and Azure: 500 enum
# values in a schema, and 7,500 characters for an enum of more than 250); past these, the
# validators alone check the names.
MAX_ENUM_NAMES = 100
MAX_ENUM_CHARS = 5_000


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema in the subset every structured-output provider accepts in strict mode.

    Every property is required (optional ones are nullable), objects forbid extra properties, `$ref`s
    are inlined, and range/length keywords — rejected by some providers — become words in the
    description (except `minItems: 1`); pydantic still enforces them in parse_output.
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
        if (key, node.get(key)) in _KEPT:
            out[key] = node[key]
        elif key in node:
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


def _required_object(description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _decision_schema(schema: dict[str, Any], inp: DecisionInput) -> None:
    # An enum is the one portable way to make the model copy an option exactly, and a required
    # property per option the one way to have every option scored exactly once.
    options = list(inp.options)
    props = schema["properties"]
    props["chosen_option"]["enum"] = options
    score = props["scores"]["items"]["properties"]["score"]
    props["scores"] = _required_object(
        "Every option, keyed exactly as listed, with its score.", {option: dict(score) for option in options}
    )


def _content_schema(schema: dict[str, Any], inp: ContentInput) -> None:
    variants = schema["properties"]["variants"]
    props = {name: dict(variants["items"]) for name in variant_names(inp.variants)}
    schema["properties"]["variants"] = _required_object(
        f"{variants['description']} Exactly {inp.variants}, one a property.", props
    )


def _events_schema(schema: dict[str, Any], inp: EventsInput) -> None:
    names = event_names(inp.events or [])
    for field, key in (("sessions", "session"), ("tools", "tool")):
        known = names[field]
        if known and len(known) <= MAX_ENUM_NAMES and sum(map(len, known)) <= MAX_ENUM_CHARS:
            schema["properties"][field]["items"]["properties"][key]["enum"] = known


# How each task's schema narrows to one input (the rules that depend on it).
NARROW: dict[str, Callable[[dict[str, Any], Any], None]] = {
    "make_decision": _decision_schema,
    "generate_content": _content_schema,
    "summarize_events": _events_schema,
}


@functools.cache
def _base_schema(task: str) -> dict[str, Any]:
    return strict_schema(spec_for(task).output_model)


def response_format(task: str, input: BaseModel | dict[str, Any] | None = None) -> dict[str, Any]:
    """The `json_schema` response_format for `task`, narrowed to `input` when given.

    Without an input the schema cannot know the options: `scores` is then a list of
    `{option, score}` pairs and `variants` a list.
    """
    spec = spec_for(task)
    schema = copy.deepcopy(_base_schema(task))
    if input is not None and (narrow := NARROW.get(task)):
        narrow(schema, as_input(spec, input))
    return {"type": "json_schema", "json_schema": {"name": task, "schema": schema, "strict": True}}
