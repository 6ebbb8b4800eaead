"""The wire shapes of moderations, images, transcriptions and rerank, whatever the adapter.

Both adapters hand the router a plain dict: an OpenAI-wire provider's JSON as it came, or LiteLLM's
response object dumped (`model_dump()`: `None` for every field the provider left out, the SDK's
Python names such as `self_harm_intent` for moderation categories, `_`-prefixed bookkeeping). These
functions rebuild the public shape from either: OpenAI's for the first three, the Cohere/Jina shape
LiteLLM exposes for rerank (`{id, results: [{index, relevance_score, document?}], meta}`). An answer
that is not of its shape at all is a provider error (502), never passed on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from shared.errors import UpstreamError

# The OpenAI SDK's attribute names for moderation categories (what a LiteLLM dump holds).
_CATEGORY_NAMES = {
    "harassment_threatening": "harassment/threatening",
    "hate_threatening": "hate/threatening",
    "illicit_violent": "illicit/violent",
    "self_harm": "self-harm",
    "self_harm_instructions": "self-harm/instructions",
    "self_harm_intent": "self-harm/intent",
    "sexual_minors": "sexual/minors",
    "violence_graphic": "violence/graphic",
}
_CATEGORY_FIELDS = ("categories", "category_scores", "category_applied_input_types")


def moderation(raw: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A `CreateModerationResponse`; `model` is the public name that answered."""
    results = raw.get("results")
    if not isinstance(results, list) or not all(isinstance(r, Mapping) for r in results):
        raise _not_shaped("moderation")
    shaped = []
    for result in results:
        item = _present(result)
        for name in _CATEGORY_FIELDS:
            if isinstance(item.get(name), Mapping):
                item[name] = {_CATEGORY_NAMES.get(k, k): v for k, v in item[name].items() if v is not None}
        item["flagged"] = bool(item.get("flagged"))
        shaped.append(item)
    return {"id": str(raw.get("id") or f"modr-{uuid.uuid4().hex}"), "model": model, "results": shaped}


def images(raw: Mapping[str, Any]) -> dict[str, Any]:
    """An `ImagesResponse`: images as the provider made them (`b64_json` or `url`)."""
    data = raw.get("data")
    if not isinstance(data, list) or not all(isinstance(item, Mapping) for item in data):
        raise _not_shaped("image generation")
    body = _present(raw)
    body["created"] = int(raw.get("created") or time.time())
    body["data"] = [_present(item) for item in data]
    usage = body.get("usage")
    if not (isinstance(usage, Mapping) and usage.get("total_tokens")):
        body.pop("usage", None)  # LiteLLM fills zeros when the provider reported nothing
    return body


def transcription(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A transcription: OpenAI's JSON, or `{"text": ...}` for the text, srt and vtt formats."""
    if not isinstance(raw.get("text"), str):
        raise _not_shaped("transcription")
    return _present(raw)


def rerank(raw: Mapping[str, Any], return_documents: bool | None) -> dict[str, Any]:
    """Cohere's rerank shape, from Cohere's own (LiteLLM) or vLLM's and Jina's (`usage`, no `meta`).

    `document` is dropped when the client asked for none, as some servers always send it."""
    results = raw.get("results")
    if not isinstance(results, list):
        raise _not_shaped("rerank")
    shaped = []
    for result in results:
        if not isinstance(result, Mapping) or "index" not in result or "relevance_score" not in result:
            raise _not_shaped("rerank")
        item: dict[str, Any] = {
            "index": int(result["index"]),
            "relevance_score": float(result["relevance_score"]),
        }
        document = result.get("document")
        if document is not None and return_documents is not False:
            item["document"] = document if isinstance(document, Mapping) else {"text": str(document)}
        shaped.append(item)
    meta = _present(raw.get("meta") or {})
    tokens = (raw.get("usage") or {}).get("total_tokens")
    if isinstance(tokens, int):
        meta["billed_units"] = {"total_tokens": tokens, **(meta.get("billed_units") or {})}
    return {"id": str(raw.get("id") or f"rerank-{uuid.uuid4().hex}"), "results": shaped, "meta": meta}


def _present(raw: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` without the fields LiteLLM dumps as None and its `_`-prefixed bookkeeping."""
    return {k: v for k, v in raw.items() if v is not None and not str(k).startswith("_")}


def _not_shaped(what: str) -> UpstreamError:
    return UpstreamError(f"The model provider returned a {what} answer Cirrus does not recognise.")
