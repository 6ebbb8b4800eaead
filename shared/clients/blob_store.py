"""BlobStore on Azure Blob Storage (and Azurite)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient


class AzureBlobStore:
    """Blob containers of one storage account. Create once per worker and reuse."""

    def __init__(self, client: BlobServiceClient) -> None:
        self._client = client

    @classmethod
    def from_connection_string(cls, conn: str) -> AzureBlobStore:
        return cls(BlobServiceClient.from_connection_string(conn))

    @classmethod
    def from_identity(cls, account_url: str, credential: Any) -> AzureBlobStore:
        return cls(BlobServiceClient(account_url, credential=credential))

    async def put(
        self,
        container: str,
        name: str,
        data: bytes | AsyncIterator[bytes],
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Write (or overwrite) a blob, streaming when `data` is an iterator; returns its size."""
        size = 0

        async def counted(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                yield chunk

        body: Any = data if isinstance(data, bytes) else counted(data)
        if isinstance(data, bytes):
            size = len(data)
        await self._client.get_blob_client(container, name).upload_blob(
            body,
            overwrite=True,
            content_settings=ContentSettings(content_type=content_type),
            metadata=dict(metadata or {}),
        )
        return size

    async def get(self, container: str, name: str) -> bytes | None:
        try:
            downloader = await self._client.get_blob_client(container, name).download_blob()
        except ResourceNotFoundError:
            return None
        return await downloader.readall()

    async def stream(self, container: str, name: str) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks, never all in memory; raises KeyError if it does not exist."""
        try:
            downloader = await self._client.get_blob_client(container, name).download_blob()
        except ResourceNotFoundError:
            raise KeyError(f"{container}/{name}") from None
        async for chunk in downloader.chunks():
            yield chunk

    async def delete(self, container: str, name: str) -> bool:
        try:
            await self._client.get_blob_client(container, name).delete_blob()
        except ResourceNotFoundError:
            return False
        return True

    async def names(self, container: str, prefix: str) -> list[str]:
        """Names of the blobs under `prefix`, in name order."""
        client = self._client.get_container_client(container)
        return [blob.name async for blob in client.list_blobs(name_starts_with=prefix)]

    async def ensure_container(self, name: str) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self._client.create_container(name)

    async def ping(self, container: str) -> None:
        """Cheapest call the app's own data role allows: does its container exist?"""
        if not await self._client.get_container_client(container).exists():
            raise ResourceNotFoundError(f"blob container {container} does not exist")

    async def aclose(self) -> None:
        await self._client.close()
