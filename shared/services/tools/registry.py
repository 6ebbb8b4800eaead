"""The built-in tools by name, and the one check of a job's tool list before it starts."""

from __future__ import annotations

from collections.abc import Sequence

from shared.errors import InvalidRequestError
from shared.services.tools.base import Tool, ToolSettings
from shared.services.tools.calculator import CalculatorTool
from shared.services.tools.http_get import HttpGetTool
from shared.services.tools.read_file import ReadFileTool
from shared.services.tools.web_search import WebSearchTool

BUILTIN_TOOLS: tuple[str, ...] = ("calculator", "read_file", "http_get", "web_search")


def build_tools(names: Sequence[str], settings: ToolSettings) -> dict[str, Tool]:
    """The tools named, in order (a repeat is harmless); 400 for an unknown or unconfigured one.

    Checked when a job is created, so a bad tool list is the client's 400, not a failed job.
    """
    tools: dict[str, Tool] = {}
    for name in names:
        if name not in BUILTIN_TOOLS:
            raise InvalidRequestError(
                f"Unknown tool {name!r}. Built-in tools: {', '.join(BUILTIN_TOOLS)}.", param="tools"
            )
        if name == "web_search" and settings.search is None:
            raise InvalidRequestError(
                "The web_search tool is not available: no search provider is configured.", param="tools"
            )
        tools.setdefault(name, _make(name))
    return tools


def _make(name: str) -> Tool:
    if name == "calculator":
        return CalculatorTool()
    if name == "read_file":
        return ReadFileTool()
    if name == "http_get":
        return HttpGetTool()
    return WebSearchTool()
