"""The console's sign-in: a key exchanged for a session cookie (`/console/api/session`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ConsoleSessionCreate(BaseModel):
    """Sign in with a key, master or virtual. The key is checked, never stored."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=512)


class ConsoleSessionPublic(BaseModel):
    """Who is signed in, by key id (None for the master key), and until when (unix seconds)."""

    key_id: str | None
    name: str | None
    is_master: bool
    expires_at: int
