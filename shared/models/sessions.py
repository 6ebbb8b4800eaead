"""Sessions: stored conversations a chat request can name to continue."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.models.requests import ChatMessage, ShortStr


class SessionCreate(BaseModel):
    """`POST /v1/sessions` body (all optional)."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, max_length=256)
    metadata: dict[ShortStr, ShortStr] | None = Field(None, max_length=16)
    messages: list[ChatMessage] = Field(default_factory=list, max_length=1000)


class ArchivedPart(BaseModel):
    blob: str  # name in the outputs container
    messages: int


class SessionRecord(BaseModel):
    """The Cosmos item (`sessions`, partitioned by session id)."""

    id: str
    pk: str
    object: Literal["session"] = "session"
    owner: str  # key id of the creator
    team: str | None = None  # the creator's team: its other keys see the session too
    title: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: float
    updated_at: float
    messages: list[dict[str, Any]] = Field(default_factory=list)  # the live tail of the history
    archived: list[ArchivedPart] = Field(default_factory=list)  # older messages, moved to Blob
    message_count: int = 0
    etag: str | None = Field(None, alias="_etag", exclude=True)

    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class SessionPublic(BaseModel):
    id: str
    object: Literal["session"] = "session"
    title: str | None
    metadata: dict[str, str]
    created_at: int
    updated_at: int
    message_count: int
    messages: list[dict[str, Any]] | None = None  # in GET /v1/sessions/{id}, not in lists


class SessionListPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[SessionPublic]
    first_id: str | None
    last_id: str | None
    has_more: bool
