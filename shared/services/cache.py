"""Exact-match response cache in Cosmos (`cache`, items expire by TTL).

Opt-in per model (`model_info.cache_ttl_seconds` in the model file) and per request: a request
with `Cache-Control: no-cache` skips the lookup (and refreshes the entry), `no-store` neither
reads nor writes. The key is a hash of the normalised request: model, messages (after session
history) and every parameter that changes the answer, scoped to the caller's team or key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from shared.clients.protocols import DocumentStore

log = logging.getLogger("cirrus.cache")

CONTAINER = "cache"
# Parameters that do not change the answer's content.
_IGNORED = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "safety_identifier", "prompt_cache_key"}
)


class CacheStatus(StrEnum):
    OFF = "off"  # the model is not cached
    HIT = "hit"
    MISS = "miss"
    BYPASS = "bypass"  # the client said no-cache or no-store


def cache_key(endpoint: str, params: Mapping[str, Any], *, tenant: str) -> str:
    """The entry for a request. Scoped to the caller's tenant (team, or key): a hit must not
    tell one tenant what another asked."""
    relevant = {k: v for k, v in params.items() if k not in _IGNORED}
    canonical = json.dumps(
        {"endpoint": endpoint, "tenant": tenant, **relevant}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def directives(cache_control: str | None) -> set[str]:
    return {part.strip().lower() for part in (cache_control or "").split(",") if part.strip()}


class ResponseCache:
    def __init__(self, documents: DocumentStore) -> None:
        self._documents = documents

    async def get(self, key: str) -> dict[str, Any] | None:
        """The stored chat completion (OpenAI's JSON), or None on a miss."""
        try:
            doc = await self._documents.read(CONTAINER, key, key)
        except Exception as exc:  # a cache that is down is a miss, not an outage
            log.warning("cache read failed: %s", type(exc).__name__)
            return None
        if doc is None or doc.get("expires_at", 0) < time.time():
            return None
        completion = doc.get("completion")
        return completion if isinstance(completion, dict) else None

    async def put(self, key: str, completion: Mapping[str, Any], ttl_seconds: int) -> None:
        await self._documents.upsert(
            CONTAINER,
            {
                "id": key,
                "pk": key,
                "completion": dict(completion),
                "ttl": ttl_seconds,
                # Cosmos deletes after `ttl`; the explicit expiry also covers stores without TTL.
                "expires_at": time.time() + ttl_seconds,
            },
        )
