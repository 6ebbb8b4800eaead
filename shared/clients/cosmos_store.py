"""DocumentStore on Azure Cosmos DB for NoSQL (and the local Cosmos DB server).

Queries that belong to one owner or partition say so in their SQL (`WHERE c.pk = @pk`) as well as
passing `pk`: the local server ignores the partition scope, and an explicit predicate keeps tenant
isolation from resting on a request option.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from azure.core import MatchConditions
from azure.cosmos import PartitionKey
from azure.cosmos import exceptions as cosmos_errors
from azure.cosmos.aio import ContainerProxy, CosmosClient

from shared.clients.protocols import CosmosContainerSpec
from shared.errors import ConflictError, PreconditionFailedError

# Fields Cosmos adds that callers never need; `_etag` and `_ts` are kept.
_SYSTEM_FIELDS = ("_rid", "_self", "_attachments")
ITERATE_PAGE_ITEMS = 100  # items a page of `iterate`; a usage item holds up to 40 records
# Cosmos item ids are at most 255 characters and never hold these (they would end up in the URL).
_ID_FORBIDDEN = frozenset("/\\?#")
_ID_MAX = 255


class CosmosDocumentStore:
    """One database's containers, addressed by name. Create once per worker and reuse."""

    def __init__(self, endpoint: str, credential: Any, database: str, *, local: bool = False) -> None:
        # The local Cosmos DB server speaks plain HTTP on one address: no region discovery.
        self._client = CosmosClient(endpoint, credential=credential, enable_endpoint_discovery=not local)
        self._database_name = database
        self._db = self._client.get_database_client(database)
        self._containers: dict[str, ContainerProxy] = {}

    def _container(self, name: str) -> ContainerProxy:
        if name not in self._containers:
            self._containers[name] = self._db.get_container_client(name)
        return self._containers[name]

    async def read(self, container: str, id: str, pk: str) -> dict[str, Any] | None:
        if not _addressable(id):  # a client's id Cosmos could not hold: no such item, not an error
            return None
        try:
            return _clean(await self._container(container).read_item(id, partition_key=pk))
        except cosmos_errors.CosmosResourceNotFoundError:
            return None

    async def create(self, container: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return _clean(await self._container(container).create_item(dict(doc)))
        except cosmos_errors.CosmosResourceExistsError:
            raise ConflictError(f"{container} item {doc.get('id')!r} already exists") from None

    async def upsert(self, container: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        return _clean(await self._container(container).upsert_item(dict(doc)))

    async def replace(
        self, container: str, doc: Mapping[str, Any], *, etag: str | None = None
    ) -> dict[str, Any]:
        body = {k: v for k, v in doc.items() if k not in ("_etag", "_ts")}
        try:
            item = await self._container(container).replace_item(body["id"], body, **_if_match(etag))
        except cosmos_errors.CosmosAccessConditionFailedError:
            raise PreconditionFailedError(f"{container} item {body['id']!r} changed meanwhile") from None
        return _clean(item)

    async def delete(self, container: str, id: str, pk: str, *, etag: str | None = None) -> bool:
        if not _addressable(id):
            return False
        try:
            await self._container(container).delete_item(id, partition_key=pk, **_if_match(etag))
        except cosmos_errors.CosmosResourceNotFoundError:
            return False
        except cosmos_errors.CosmosAccessConditionFailedError:
            raise PreconditionFailedError(f"{container} item {id!r} changed meanwhile") from None
        return True

    async def query(
        self,
        container: str,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        pk: str | None = None,
        max_items: int | None = None,
    ) -> list[dict[str, Any]]:
        params = [{"name": name, "value": value} for name, value in (parameters or {}).items()]
        kwargs: dict[str, Any] = {"parameters": params}
        if pk is not None:
            kwargs["partition_key"] = pk
        if max_items is not None:
            kwargs["max_item_count"] = max_items
        items: list[dict[str, Any]] = []
        async for item in self._container(container).query_items(sql, **kwargs):
            items.append(_clean(item))
            if max_items is not None and len(items) >= max_items:
                break
        return items

    async def iterate(
        self, container: str, sql: str, parameters: Mapping[str, Any] | None = None, *, pk: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        params = [{"name": name, "value": value} for name, value in (parameters or {}).items()]
        kwargs: dict[str, Any] = {"parameters": params, "max_item_count": ITERATE_PAGE_ITEMS}
        if pk is not None:
            kwargs["partition_key"] = pk
        # The SDK's pager asks Cosmos for the next page only when this one is used up.
        async for item in self._container(container).query_items(sql, **kwargs):
            yield _clean(item)

    async def ensure_database(self) -> None:
        await self._client.create_database_if_not_exists(self._database_name)

    async def ensure_container(self, spec: CosmosContainerSpec) -> None:
        await self._db.create_container_if_not_exists(
            spec.name, partition_key=PartitionKey(path=spec.partition_key), default_ttl=spec.default_ttl
        )

    async def ping(self) -> None:
        await self._db.read()

    async def aclose(self) -> None:
        await self._client.close()


def _addressable(id: str) -> bool:
    return 0 < len(id) <= _ID_MAX and _ID_FORBIDDEN.isdisjoint(id)


def _if_match(etag: str | None) -> dict[str, Any]:
    return {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}


def _clean(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in _SYSTEM_FIELDS}
