"""Turn pydantic validation failures into OpenAI-style 400s that name the offending parameter."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from shared.errors import InvalidRequestError

# Segments pydantic adds to an error location to say which branch of a union failed.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "dict", "list"})


def validate_body[M: BaseModel](model: type[M], data: Any) -> M:
    """`model` validated from `data`, or InvalidRequestError naming the first bad parameter."""
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _to_invalid_request(exc) from None


def _to_invalid_request(exc: ValidationError) -> InvalidRequestError:
    errors = exc.errors(include_url=False, include_input=False)
    # The deepest location is the most specific one (a bad content part, not "not a string").
    err = max(errors, key=lambda e: len(e["loc"]))
    original = (err.get("ctx") or {}).get("error")
    if name := getattr(original, "name", None):  # UnknownFieldError, SteeringFieldError
        return InvalidRequestError(str(original), param=name)
    param = param_path(err["loc"])
    if err["type"] == "missing":
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param)
    message = err["msg"].removeprefix("Value error, ")
    where = f"'{param}'" if param else "the request body"
    return InvalidRequestError(f"Invalid value for {where}: {message}", param=param or None)


def param_path(loc: tuple[int | str, ...]) -> str:
    """`("messages", 0, "str", "content")` → `messages[0].content` (union and constraint tags dropped)."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _TYPE_TAGS or "[" in part or "-" in part or part[:1].isupper():
            continue
        else:
            path += f".{part}" if path else part
    return path
