"""What the stateful resources (batches, jobs) share: a caller's page of them, newest first, and a
change to one item guarded by its ETag."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from shared.clients.protocols import DocumentStore
from shared.errors import NotFoundError, PreconditionFailedError, ServiceUnavailableError
from shared.services.auth import Principal

R = TypeVar("R", bound=BaseModel)
UPDATE_ATTEMPTS = 50


async def owned_page(
    documents: DocumentStore,
    container: str,
    kind: str,
    principal: Principal,
    *,
    limit: int,
    after_ts: float | None,
    public: Callable[[dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """The caller's items of `kind` (its own, its team's, or all for the master key), newest
    first, `limit` of them after the item created at `after_ts`, as an OpenAI-style list."""
    scope, params = principal.scope()
    sql = "SELECT * FROM c WHERE c.object = @kind" + scope  # noqa: S608 - parameterised
    params["@kind"] = kind
    if after_ts is not None:
        sql += " AND c.ts < @ts"
        params["@ts"] = after_ts
    rows = await documents.query(container, sql + " ORDER BY c.ts DESC", params, max_items=limit + 1)
    page = [public(row) for row in rows[:limit]]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(rows) > limit,
    }


async def update(
    documents: DocumentStore,
    container: str,
    item_id: str,
    load: Callable[[str], Awaitable[R | None]],
    change: Callable[[R], bool],
    *,
    what: str,
) -> R:
    """Apply `change` (False: nothing to do) to a fresh copy of the item, written under its ETag,
    retried with jitter while others write it first."""
    for attempt in range(UPDATE_ATTEMPTS):
        current = await load(item_id)
        if current is None:
            raise NotFoundError(f"No {what} found with id '{item_id}'.", param=f"{what}_id")
        if not change(current):
            return current
        try:
            stored = await documents.replace(
                container, current.model_dump(mode="json"), etag=getattr(current, "etag", None)
            )
        except PreconditionFailedError:
            await asyncio.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # noqa: S311 - jitter
            continue
        return type(current).model_validate(stored)
    raise ServiceUnavailableError(f"The {what} {item_id} is changing too fast; retry.")
