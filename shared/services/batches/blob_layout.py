"""Where a batch keeps its blobs (all in the outputs container), so every module names them alike:

    batches/<id>/chunks/<n>.jsonl              the requests of chunk n, written once at start
    batches/<id>/results/<n>/<part>.jsonl      results of chunk n, one blob per save; part names
                                               sort in write order, so the first result saved wins
    batches/<id>/<kind>-<attempt>.jsonl        the output and error files, one blob per finalize

and how the chunk and result blobs are read back.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from shared.clients.protocols import BlobStore
from shared.services.batches.lines import Request, numbered_lines


def chunk_blob(batch_id: str, n: int) -> str:
    return f"batches/{batch_id}/chunks/{n:05d}.jsonl"


def results_prefix(batch_id: str, n: int | None = None) -> str:
    """The result blobs of chunk `n`, or of the whole batch."""
    if n is None:
        return f"batches/{batch_id}/results/"
    return f"batches/{batch_id}/results/{n:05d}/"


def result_part(batch_id: str, n: int) -> str:
    """A new result blob of chunk `n`, named after everything saved before it."""
    return results_prefix(batch_id, n) + f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"


def file_blob(batch_id: str, kind: str) -> str:
    """Its own blob per attempt: two finalizers of one batch must not write one blob at once."""
    return f"batches/{batch_id}/{kind}-{uuid.uuid4().hex[:12]}.jsonl"


async def read_chunk(blobs: BlobStore, container: str, batch_id: str, n: int) -> AsyncIterator[Request]:
    """The requests of chunk `n`, one at a time; KeyError (a LookupError) if it was never written."""
    async for _, text in numbered_lines(blobs.stream(container, chunk_blob(batch_id, n))):
        if text and text.strip():
            item = json.loads(text)
            yield Request(item["line"], item["custom_id"], item["body"])


async def result_names(blobs: BlobStore, container: str, batch_id: str, n: int | None = None) -> list[str]:
    """The result blobs of chunk `n` (or of the whole batch), oldest first."""
    return await blobs.names(container, results_prefix(batch_id, n))


async def read_results(
    blobs: BlobStore, container: str, names: list[str]
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Every result line of these result blobs, as saved and parsed, one blob at a time."""
    for name in names:
        async for _, text in numbered_lines(blobs.stream(container, name)):
            if text and text.strip():
                yield text, json.loads(text)
