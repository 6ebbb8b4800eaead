"""What every built-in tool shares: its errors, settings, context, and one table of parameters
that gives both the JSON schema the model sees and the checks its arguments get.

A tool never raises anything but `ToolError` for a problem the model caused or can work around:
the runner sends the message back as the tool's result, so a bad call costs one turn, not the job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shared.services.auth import Principal
from shared.services.files import FileService


class ToolError(Exception):
    """A failed tool call. `message` is written for the model: no internals, no secrets."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ToolBlocked(ToolError):
    """An outbound request refused by the SSRF guard; the runner records `reason` as an event."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Request refused: {reason}.")
        self.reason = reason


class SearchProvider(Protocol):
    async def search(self, query: str, limit: int) -> list[dict[str, str]]:
        """Up to `limit` results, each `{"title", "url", "snippet"}`."""
        ...


@dataclass(frozen=True)
class ToolSettings:
    http_allowlist: tuple[str, ...] = ()  # host names, exact or "*.example.com"; empty: http_get refuses all
    http_max_bytes: int = 1_000_000
    http_timeout_s: float = 10.0  # for the whole call: DNS, every redirect and the body
    http_max_redirects: int = 3
    file_max_bytes: int = 5_000_000
    search: SearchProvider | None = None  # web_search is off unless one is configured


@dataclass
class ToolContext:
    """Whose call this is: files are read as `principal`, never as the job's runner."""

    principal: Principal
    files: FileService
    settings: ToolSettings


class Tool(Protocol):
    name: str

    def spec(self) -> dict[str, Any]:
        """The OpenAI chat tool definition the model is offered."""
        ...

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> str:
        """The result text for the model; raises ToolError for anything the model should hear."""
        ...


@dataclass(frozen=True)
class Param:
    """One argument: its JSON schema and its check come from here, so they cannot drift apart."""

    name: str
    kind: type[str] | type[int]
    description: str
    required: bool = True
    minimum: int | None = None  # a value for int, a length for str
    maximum: int | None = None

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "string" if self.kind is str else "integer",
            "description": self.description,
        }
        low, high = ("minLength", "maxLength") if self.kind is str else ("minimum", "maximum")
        if self.minimum is not None:
            schema[low] = self.minimum
        if self.maximum is not None:
            schema[high] = self.maximum
        return schema

    def check(self, value: Any) -> Any:
        # bool is an int to Python but not to JSON schema.
        if not isinstance(value, self.kind) or isinstance(value, bool):
            raise ToolError(f"'{self.name}' must be {'a string' if self.kind is str else 'an integer'}.")
        size, unit = (len(value), " characters") if isinstance(value, str) else (value, "")
        if self.minimum is not None and size < self.minimum:
            if isinstance(value, str) and self.minimum == 1:
                raise ToolError(f"'{self.name}' must not be empty.")
            raise ToolError(f"'{self.name}' must be at least {self.minimum}{unit}.")
        if self.maximum is not None and size > self.maximum:
            raise ToolError(f"'{self.name}' must be at most {self.maximum}{unit}.")
        return value


def function_spec(name: str, description: str, params: Sequence[Param]) -> dict[str, Any]:
    """An OpenAI function tool definition with a strict schema (no properties beyond `params`)."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {p.name: p.schema() for p in params},
                "required": [p.name for p in params if p.required],
                "additionalProperties": False,
            },
        },
    }


def parse_arguments(arguments: Any, params: Sequence[Param]) -> dict[str, Any]:
    """`arguments` checked against `params`; optional ones that are absent (or null) are left out."""
    if not isinstance(arguments, Mapping):
        raise ToolError("The arguments must be a JSON object.")
    known = {p.name for p in params}
    unknown = sorted(str(k) for k in arguments if k not in known)
    if unknown:
        raise ToolError(f"Unknown argument(s): {', '.join(unknown)}. Expected: {', '.join(sorted(known))}.")
    parsed: dict[str, Any] = {}
    for param in params:
        value = arguments.get(param.name)
        if value is None:
            if param.required:
                raise ToolError(f"Missing required argument '{param.name}'.")
            continue
        parsed[param.name] = param.check(value)
    return parsed


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying so when it was cut."""
    if len(text) <= limit:
        return text
    note = f"\n[output truncated to {limit} characters]"
    if limit <= len(note):
        return text[:limit]
    return text[: limit - len(note)] + note
