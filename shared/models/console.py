"""The console's sign-in: a key exchanged for a session cookie (`/console/api/session`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ConsoleSessionCreate(BaseModel):
    """Sign in with a key, master or virtual, or an Entra ID access token. It is checked, never stored."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=16_384)


class ConsoleSessionPublic(BaseModel):
    """Who is signed in, by key id (`entra_<object id>` for an Entra ID caller, None for the master
    key), whether they are an admin, and until when (unix seconds)."""

    key_id: str | None
    name: str | None
    is_master: bool
    kind: Literal["key", "master", "entra"] = "key"
    expires_at: int
