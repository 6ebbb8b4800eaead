"""Files: OpenAI's file object, and how Cirrus stores one (bytes in Blob, metadata in Cosmos)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# What clients may upload for, as OpenAI names them; `batch_output` is Cirrus's own writing.
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
Purpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals", "batch_output"]


class FileRecord(BaseModel):
    """The Cosmos item (`files`, partitioned by file id). The blob name is Cirrus's, never the client's."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str
    pk: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    ts: float  # created_at with sub-second precision: the list order
    filename: str  # the client's name, cleaned; metadata only
    purpose: Purpose
    container: str
    blob: str
    owner: str
    team: str | None = None
    expires_at: int | None = None


class FilePublic(BaseModel):
    """OpenAI's `OpenAIFile`."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: Purpose
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None

    @classmethod
    def of(cls, record: FileRecord) -> FilePublic:
        return cls(
            id=record.id,
            bytes=record.bytes,
            created_at=record.created_at,
            expires_at=record.expires_at,
            filename=record.filename,
            purpose=record.purpose,
        )


class FileListPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[FilePublic] = Field(default_factory=list)
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileCreate(BaseModel):
    """`POST /v1/files`: the form's fields beside `file` (read as the upload streams in)."""

    purpose: Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
