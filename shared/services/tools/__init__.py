"""Built-in tools for agent jobs: calculator, read_file, http_get, web_search.

A tool is a `spec()` (the OpenAI function definition the model is offered) and an async
`run(arguments, ctx)` that returns text for the model. Anything the model got wrong or the world
refused comes back as `ToolError` (its message is the tool's result), and an outbound request
refused by the SSRF guard as its subclass `ToolBlocked`, which the runner also records as an event.
"""

from shared.services.tools.base import (
    SearchProvider,
    Tool,
    ToolBlocked,
    ToolContext,
    ToolError,
    ToolSettings,
)
from shared.services.tools.registry import BUILTIN_TOOLS, build_tools

__all__ = [
    "BUILTIN_TOOLS",
    "SearchProvider",
    "Tool",
    "ToolBlocked",
    "ToolContext",
    "ToolError",
    "ToolSettings",
    "build_tools",
]
