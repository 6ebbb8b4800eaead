"""Parsing the model's reply: JSON, the task's output model and the rules that need the input, and
the one repair turn that shows the model what was wrong.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.services.analysis.errors import AnalysisOutputError, describe
from shared.services.analysis.prompts import Messages
from shared.services.analysis.tasks import as_input, spec_for

MAX_REPAIR_ECHO = 20_000  # characters of a bad reply echoed back in the repair turn


def _strip_fence(text: str) -> str:
    # Models without structured-output support often wrap JSON in a Markdown fence.
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped[3:-3]
        first_line, _, rest = stripped.partition("\n")
        stripped = rest if first_line.strip().isalpha() or not first_line.strip() else stripped
    return stripped.strip()


def parse_output(task: str, text: str, input: BaseModel | dict[str, Any]) -> BaseModel:
    """The model's reply as the task's output model, checked against `input` (options, counts, names)."""
    spec = spec_for(task)
    if not isinstance(text, str) or not text.strip():
        raise AnalysisOutputError("The reply was empty; expected a JSON object.")
    try:
        data = json.loads(_strip_fence(text))
    except json.JSONDecodeError as exc:
        raise AnalysisOutputError(
            f"The reply is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}."
        ) from None
    if not isinstance(data, dict):
        raise AnalysisOutputError(f"The reply must be a JSON object, not {type(data).__name__}.")
    context = spec.context(as_input(spec, input)) if spec.context else None
    try:
        return spec.output_model.model_validate(data, context=context)
    except ValidationError as exc:
        raise AnalysisOutputError(f"The reply does not match the schema: {describe(exc)}") from None


def repair_messages(task: str, messages: Messages, bad_text: str, error: str) -> Messages:
    """The one repair turn: the conversation, the bad reply, and what was wrong with it."""
    spec_for(task)
    echoed = bad_text if len(bad_text) <= MAX_REPAIR_ECHO else bad_text[:MAX_REPAIR_ECHO] + "…"
    return [
        *messages,
        {"role": "assistant", "content": echoed},
        {
            "role": "user",
            "content": f"That reply is invalid. {error}\nReply again with the corrected JSON object only.",
        },
    ]
