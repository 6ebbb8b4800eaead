"""web_search: a query to the configured search provider, results as a numbered list.

Off unless the server configures a provider (`ToolSettings.search`); `build_tools` refuses it
otherwise, so a job never starts with a tool that can only fail.
"""

from __future__ import annotations

import logging
from typing import Any

from shared.services.tools.base import (
    Param,
    ToolContext,
    ToolError,
    clip,
    function_spec,
    parse_arguments,
)

log = logging.getLogger("cirrus.tools")

DEFAULT_LIMIT = 5
MAX_LIMIT = 10
MAX_SNIPPET_CHARS = 500

PARAMS = (
    Param("query", str, "What to search the web for.", minimum=1, maximum=500),
    Param(
        "limit",
        int,
        f"How many results to return (default {DEFAULT_LIMIT}).",
        required=False,
        minimum=1,
        maximum=MAX_LIMIT,
    ),
)


class WebSearchTool:
    name = "web_search"

    def spec(self) -> dict[str, Any]:
        return function_spec(
            self.name, "Search the web and return the top results: title, URL and a snippet.", PARAMS
        )

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> str:
        args = parse_arguments(arguments, PARAMS)
        query: str = args["query"]
        limit: int = args.get("limit", DEFAULT_LIMIT)
        provider = ctx.settings.search
        if provider is None:
            raise ToolError("Web search is not configured on this server.")
        try:
            results = await provider.search(query, limit)
        except ToolError:
            raise
        except Exception as exc:  # a provider outage costs the model one turn, not the job
            log.warning("web_search provider failed: %s", type(exc).__name__)
            raise ToolError("The search provider failed; try again later or without searching.") from None
        return format_results(query, results[:limit])


def format_results(query: str, results: list[dict[str, str]]) -> str:
    if not results:
        return f"No results for {query!r}."
    lines: list[str] = []
    for number, result in enumerate(results, 1):
        lines.append(f"{number}. {str(result.get('title') or '(untitled)').strip()}")
        if url := str(result.get("url") or "").strip():
            lines.append(f"   {url}")
        if snippet := " ".join(str(result.get("snippet") or "").split()):
            lines.append(f"   {clip(snippet, MAX_SNIPPET_CHARS)}")
    return "\n".join(lines)
