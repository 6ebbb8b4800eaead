"""Files: bytes streamed to Blob, metadata in Cosmos, owned by the key (and team) that uploaded them.

Blob names are generated (`files/<file id>`); the client's filename is cleaned and kept only as
metadata, so no filename can choose or escape a path. Uploads stream through in chunks and are
refused past the size cap before anything is committed: a blob's blocks only become a blob when
the upload completes.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from shared.clients.protocols import BlobStore, DocumentStore
from shared.errors import InvalidRequestError
from shared.models.files import UPLOAD_PURPOSES, FileListPublic, FilePublic, FileRecord, Purpose
from shared.services import records
from shared.services.auth import Principal

log = logging.getLogger("cirrus.files")

CONTAINER = "files"
MAX_FILENAME_CHARS = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class FileService:
    def __init__(self, documents: DocumentStore, blobs: BlobStore, uploads_container: str) -> None:
        self._documents = documents
        self._blobs = blobs
        self._uploads = uploads_container

    async def create(
        self,
        principal: Principal,
        *,
        filename: str,
        purpose: Purpose | Callable[[], str | None],
        content: bytes | AsyncIterator[bytes],
        container: str | None = None,
        file_id: str | None = None,
        blob: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> FilePublic:
        """Store `content` (streamed if an iterator) and its record. A failure leaves neither.

        `purpose` may be a function, asked once the content is in: a form can send it after the file.
        A function is the client's choice and must be one of `UPLOAD_PURPOSES`; `batch_output`
        is for the files Cirrus writes itself.
        """
        file_id = file_id or new_file_id()
        container = container or self._uploads
        blob = blob or f"files/{file_id}"
        size = await self._blobs.put(
            container, blob, content, content_type=content_type, metadata={"file_id": file_id}
        )
        try:
            return await self._record(
                principal,
                file_id=file_id,
                filename=filename,
                purpose=purpose,
                container=container,
                blob=blob,
                size=size,
            )
        except BaseException:
            await self._blobs.delete(container, blob)
            raise

    async def _record(
        self,
        principal: Principal,
        *,
        file_id: str,
        filename: str,
        purpose: Purpose | Callable[[], str | None],
        container: str,
        blob: str,
        size: int,
    ) -> FilePublic:
        # A client's choice comes as a function (the form's field); only Cirrus itself names
        # `batch_output`, for the files it writes.
        chosen = purpose() if callable(purpose) else purpose
        allowed = UPLOAD_PURPOSES if callable(purpose) else (*UPLOAD_PURPOSES, "batch_output")
        if chosen not in allowed:
            raise InvalidRequestError(
                f"'purpose' must be one of {', '.join(UPLOAD_PURPOSES)}.", param="purpose"
            )
        now = time.time()
        record = FileRecord(
            id=file_id,
            pk=file_id,
            bytes=size,
            created_at=int(now),
            ts=now,
            filename=clean_filename(filename),
            purpose=cast(Purpose, chosen),  # one of them, checked above
            container=container,
            blob=blob,
            **principal.stamp(),
        )
        await self._documents.upsert(CONTAINER, record.model_dump(mode="json"))
        log.info("file %s stored (%d bytes, %s)", file_id, size, chosen)
        return FilePublic.of(record)

    async def load(self, principal: Principal, file_id: str) -> FileRecord:
        """The file if the caller may see it; 404 otherwise (never a hint that it exists)."""
        return await records.load_owned(
            self._read, file_id, principal, not_found=f"No such File object: {file_id}", param="file_id"
        )

    async def _read(self, file_id: str) -> FileRecord | None:
        doc = await self._documents.read(CONTAINER, file_id, file_id)
        return FileRecord.model_validate(doc) if doc else None

    async def get(self, principal: Principal, file_id: str) -> FilePublic:
        return FilePublic.of(await self.load(principal, file_id))

    async def content(self, principal: Principal, file_id: str) -> AsyncIterator[bytes]:
        record = await self.load(principal, file_id)
        return self.read(record)

    def read(self, record: FileRecord) -> AsyncIterator[bytes]:
        return self._blobs.stream(record.container, record.blob)

    async def list_page(
        self, principal: Principal, *, limit: int, after: str | None, order: str, purpose: str | None
    ) -> FileListPublic:
        cursor = (await self.load(principal, after)).ts if after else None
        rows, has_more = await records.owned_rows(
            self._documents,
            CONTAINER,
            "file",
            principal,
            limit=limit,
            after=cursor,
            descending=order == "desc",
            where=" AND c.purpose = @purpose" if purpose else "",
            parameters={"@purpose": purpose} if purpose else None,
        )
        page = [FilePublic.of(FileRecord.model_validate(r)) for r in rows]
        return FileListPublic(
            data=page,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
            has_more=has_more,
        )

    async def delete(self, principal: Principal, file_id: str) -> dict[str, Any]:
        record = await self.load(principal, file_id)
        await self._documents.delete(CONTAINER, record.id, record.pk)
        await self._blobs.delete(record.container, record.blob)
        log.info("file %s deleted", file_id)
        return {"id": file_id, "object": "file", "deleted": True}


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex[:24]}"


def clean_filename(name: str) -> str:
    """The last path segment, without control characters: a label, never a path."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = _CONTROL.sub("", base).strip().strip(".") or "upload"
    return base[:MAX_FILENAME_CHARS]
