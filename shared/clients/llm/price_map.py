"""Prices and context windows from the price map LiteLLM ships, read without importing LiteLLM.

`litellm/model_prices_and_context_window_backup.json` is a data file inside the installed
package; finding it with `importlib.util.find_spec` does not import the package (3 s, 220 MB).
It is parsed once per process, on the first lookup. A deployment's own prices in the model file
(`input_cost_per_token`, `output_cost_per_token`) and limits (`model_info.max_input_tokens`,
`max_output_tokens`) always win over the map.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("cirrus.llm")

MAP_FILE = "model_prices_and_context_window_backup.json"


def litellm_package_dir() -> Path | None:
    """Where LiteLLM is installed, without importing it."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _price_map() -> dict[str, dict[str, Any]]:
    package = litellm_package_dir()
    if package is None or not (package / MAP_FILE).exists():
        log.warning("LiteLLM's price map is not installed: costs are unknown unless the model file sets them")
        return {}
    return orjson.loads((package / MAP_FILE).read_bytes())


def entry(name: str) -> dict[str, Any] | None:
    """The map's entry under exactly `name` (e.g. `standard/1024-x-1024/dall-e-3`), if any."""
    found = _price_map().get(name)
    return found if isinstance(found, dict) else None


def model_entry(provider: str, upstream_model: str, base_model: str | None = None) -> dict[str, Any]:
    """The map's entry for a deployment, found the way LiteLLM looks it up; {} if unknown."""
    table = _price_map()
    candidates = [base_model] if base_model else []
    candidates += [f"{provider}/{upstream_model}", upstream_model]
    for name in candidates:
        entry = table.get(name) if name else None
        if entry is None:
            continue
        owner = str(entry.get("litellm_provider") or "")
        # A bare name must belong to the provider (or to OpenAI, for Azure's OpenAI models).
        if (
            name == upstream_model
            and owner
            and owner != provider
            and not (provider == "azure" and owner == "openai")
        ):
            continue
        return entry
    return {}


def prices(entry: dict[str, Any]) -> tuple[float, float] | None:
    """USD per input and output token, or None when the entry has no price."""
    per_input, per_output = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if per_input is None and per_output is None:
        return None
    return float(per_input or 0), float(per_output or 0)
