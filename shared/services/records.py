"""What the records a key owns share (batches, jobs, sessions, files): reading one only if the
caller may see it, a caller's page of them, newest first, and a change to one guarded by its ETag.

A record belongs to the key that created it (`owner`) and that key's team (`team`); the master
key sees every record. Another key gets the same 404 as for a record that does not exist, never
a hint that it does."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from shared.clients.protocols import DocumentStore
from shared.errors import NotFoundError, PreconditionFailedError, ServiceUnavailableError
from shared.services.auth import Principal

UPDATE_ATTEMPTS = 50


async def load_owned[R: BaseModel](
    load: Callable[[str], Awaitable[R | None]],
    item_id: str | None,
    principal: Principal,
    *,
    not_found: str,
    param: str,
) -> R:
    """The record if the caller may see it; otherwise NotFoundError(`not_found`) naming `param`."""
    record = await load(item_id) if item_id else None
    owner, team = getattr(record, "owner", None), getattr(record, "team", None)
    if record is None or not principal.can_see(owner, team):
        raise NotFoundError(not_found, param=param)
    return record


async def owned_rows(
    documents: DocumentStore,
    container: str,
    kind: str,
    principal: Principal,
    *,
    limit: int,
    after: float | None,
    order_by: str = "ts",
    descending: bool = True,
    where: str = "",
    parameters: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """One page of the caller's records of `kind` (its own, its team's, or all for the master
    key), ordered by `order_by` (newest first by default), `limit` of them after the record whose
    `order_by` value is `after`; and whether more follow. `where` adds conditions on `c`."""
    scope, params = principal.scope()
    sql = "SELECT * FROM c WHERE c.object = @kind" + scope + where  # noqa: S608 - parameterised
    params.update({"@kind": kind, **(parameters or {})})
    if after is not None:
        sql += f" AND c.{order_by} {'<' if descending else '>'} @after"
        params["@after"] = after
    direction = "DESC" if descending else "ASC"
    rows = await documents.query(
        container, f"{sql} ORDER BY c.{order_by} {direction}", params, max_items=limit + 1
    )
    return rows[:limit], len(rows) > limit


async def owned_page(
    documents: DocumentStore,
    container: str,
    kind: str,
    principal: Principal,
    *,
    limit: int,
    after: float | None,
    public: Callable[[dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """`owned_rows` as an OpenAI-style list of `public(row)`s, newest first."""
    rows, has_more = await owned_rows(documents, container, kind, principal, limit=limit, after=after)
    page = [public(row) for row in rows]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": has_more,
    }


async def newest_first(
    documents: DocumentStore, container: str, sql: str, *, before: float | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` rows of `sql` (a WHERE clause's query) newest first by `created_at`, those
    created before `before` (the previous page's last), and whether there are more."""
    params: dict[str, Any] = {}
    if before is not None:
        sql += " AND c.created_at < @before"  # one ORDER BY field: no composite index needed
        params["@before"] = before
    rows = await documents.query(container, sql + " ORDER BY c.created_at DESC", params, max_items=limit + 1)
    return rows[:limit], len(rows) > limit


async def update[R: BaseModel](
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
