"""BlobStore on Azure Blob Storage (and Azurite)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, ContentSettings
from azure.storage.blob.aio import BlobServiceClient

BLOCK_BYTES = 4 * 1024 * 1024  # a streamed blob's blocks (Blob allows up to 4,000 MiB)


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
        """Write (or overwrite) a blob; returns its size. An iterator is staged block by block as
        it comes (at most a block and one of its pieces in memory) and becomes the blob only when
        it ends: if it raises, nothing is written."""
        blob = self._client.get_blob_client(container, name)
        settings = ContentSettings(content_type=content_type)
        if isinstance(data, bytes):
            await blob.upload_blob(
                data, overwrite=True, content_settings=settings, metadata=dict(metadata or {})
            )
            return len(data)
        # Our own staging rather than upload_blob's: it joins a block from small pieces by
        # concatenating bytes, quadratic in pieces per block (3x slower for 4 KB lines).
        attempt = uuid.uuid4().hex  # this put's blocks; another writer of the name has its own
        blocks: list[BlobBlock] = []
        pending = bytearray()
        size = 0

        async def stage(block: bytes) -> None:
            block_id = f"{attempt}-{len(blocks):08d}"  # one length for every id, as Blob requires
            await blob.stage_block(block_id, block, length=len(block))
            blocks.append(BlobBlock(block_id))  # state LATEST: the block just staged

        async for piece in data:
            size += len(piece)
            pending += piece
            while len(pending) >= BLOCK_BYTES:
                with memoryview(pending) as view:
                    block = bytes(view[:BLOCK_BYTES])
                del pending[:BLOCK_BYTES]
                await stage(block)
        if pending:
            await stage(bytes(pending))
        await blob.commit_block_list(blocks, content_settings=settings, metadata=dict(metadata or {}))
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
