"""An uploaded file held for as long as the request needs it, without holding it in memory.

A provider call may be retried or fall back to another deployment, and each attempt sends the
file again, so the upload cannot be piped straight from the client to one provider. It is
spooled instead, as it arrives: in memory up to `MEMORY_BYTES`, then to a temporary file on the
instance's local disk, which each attempt reads afresh (`open()`) and which is deleted when the
request ends. The writes are small and go to the page cache, so they are done inline.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import AsyncIterator
from typing import IO, BinaryIO

from shared.blueprints._multipart import MultipartUpload
from shared.errors import InvalidRequestError

MEMORY_BYTES = 1024 * 1024


class SpooledFile:
    """Implements `UploadedFile` (shared.clients.protocols)."""

    def __init__(
        self,
        filename: str,
        content_type: str,
        *,
        memory_bytes: int = MEMORY_BYTES,
        directory: str | None = None,
    ) -> None:
        self.filename = filename
        self.content_type = content_type
        self.size = 0
        self._memory_bytes = memory_bytes
        self._directory = directory  # None: the system's temporary directory
        self._memory = bytearray()
        self._disk: IO[bytes] | None = None

    @property
    def on_disk(self) -> bool:
        return self._disk is not None

    async def fill(self, chunks: AsyncIterator[bytes]) -> None:
        async for chunk in chunks:
            self.size += len(chunk)
            if self._disk is None and len(self._memory) + len(chunk) <= self._memory_bytes:
                self._memory += chunk
                continue
            if self._disk is None:
                self._disk = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in close()
                    prefix="cirrus-upload-", dir=self._directory, delete=False
                )
                self._disk.write(self._memory)
                self._memory = bytearray()
            self._disk.write(chunk)
        if self._disk is not None:
            self._disk.flush()

    def open(self) -> BinaryIO:
        if self._disk is None:
            return io.BytesIO(self._memory)
        return open(self._disk.name, "rb")

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()
            with contextlib.suppress(OSError):
                os.unlink(self._disk.name)
            self._disk = None
        self._memory = bytearray()


@contextlib.asynccontextmanager
async def spooled_file(form: MultipartUpload, field: str = "file") -> AsyncIterator[SpooledFile]:
    """The form's file, spooled, with every field read (the form may send some after the file)."""
    if not await form.until_file() or form.file_field != field:
        raise InvalidRequestError(f"Missing required parameter: '{field}'.", param=field)
    spool = SpooledFile(_clean_name(form.filename), form.file_content_type)
    try:
        await spool.fill(form.file_chunks())
        if spool.size == 0:
            raise InvalidRequestError("The uploaded file is empty.", param=field)
        yield spool
    finally:
        spool.close()


def _clean_name(name: str | None) -> str:
    """The last path segment without control characters (a label for the provider, never a path)."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in base if c.isprintable()) or "upload"
