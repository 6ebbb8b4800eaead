"""What a call of an endpoint not billed by tokens costs, priced in its own unit.

Per unit, the keys of LiteLLM's price map (and of the model file, which wins over the map):

    images        input_cost_per_image, else output_cost_per_image, else input_cost_per_pixel x
                  the size's pixels; the map is read as LiteLLM reads it for images:
                  `[provider/]<quality>/<W>-x-<H>/<model>`, then `[provider/]<W>-x-<H>/<model>`,
                  then the model's own entry
    seconds       output_cost_per_second when it is above 0, else input_cost_per_second
                  (LiteLLM's rule for audio)
    characters    input_cost_per_character
    search_units  input_cost_per_query
    inputs        none: moderation is priced by its tokens

Without a price for the unit, tokens (reported by the provider, or counted by Cirrus for
moderation input) are priced per token, if the model has token prices; images never are, their
image tokens having prices of their own. Nothing priced: None, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shared.clients.llm import price_map
from shared.clients.protocols import Unit, UnitUsage

# A price key earlier in a list wins only when it is above 0; the last one counts even at 0.
UNIT_PRICES: dict[Unit, tuple[str, ...]] = {
    "images": ("input_cost_per_image", "output_cost_per_image"),
    "seconds": ("output_cost_per_second", "input_cost_per_second"),
    "characters": ("input_cost_per_character",),
    "search_units": ("input_cost_per_query",),
    "inputs": (),
}
PIXEL_PRICE = "input_cost_per_pixel"
# Every per-unit price key a model file may set, in `litellm_params` or `model_info`.
PRICE_KEYS = frozenset({PIXEL_PRICE, *(key for keys in UNIT_PRICES.values() for key in keys)})
_SIZE = re.compile(r"^(\d+)x(\d+)$")

TokenPrice = tuple[float, float] | None


def unit_cost(
    usage: UnitUsage,
    sources: Sequence[Mapping[str, Any]],
    token_price: TokenPrice,
) -> float | None:
    """USD for `usage`: the first of `sources` (price entries, the model file's first) that prices
    its unit, else its tokens at `token_price`, else None."""
    if usage.units is not None:
        for source in sources:
            price = _unit_price(source, usage)
            if price is not None:
                return usage.units * price
    if usage.unit == "images" or token_price is None or not (usage.input_tokens or usage.output_tokens):
        return None
    return usage.input_tokens * token_price[0] + usage.output_tokens * token_price[1]


def map_entries(
    provider: str, model: str, usage: UnitUsage, known: Mapping[str, Any]
) -> list[Mapping[str, Any]]:
    """The price map's entries for `usage`, most specific first; `known` is the model's own."""
    entries: list[Mapping[str, Any]] = []
    size = (usage.size or "").lower()
    if usage.unit == "images" and _SIZE.match(size):
        sized = size.replace("x", "-x-")
        names = [f"{usage.quality}/{sized}/{model}"] if usage.quality else []
        names.append(f"{sized}/{model}")
        for name in names:
            for candidate in (f"{provider}/{name}", name):
                found = price_map.entry(candidate)
                if found is not None:
                    entries.append(found)
    entries.append(known)
    return entries


def _unit_price(source: Mapping[str, Any], usage: UnitUsage) -> float | None:
    keys = UNIT_PRICES[usage.unit]
    for index, key in enumerate(keys):
        value = _number(source.get(key))
        if value is not None and (value > 0 or index == len(keys) - 1):
            return value
    if usage.unit == "images":
        per_pixel = _number(source.get(PIXEL_PRICE))
        match = _SIZE.match((usage.size or "").lower())
        if per_pixel is not None and match:
            return per_pixel * int(match[1]) * int(match[2])
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


PriceSources = Callable[[UnitUsage], list[Mapping[str, Any]]]
