"""Envelopes every surface shares: list pages, deletions and the two error envelopes.

The error models describe what `shared.errors.error_body` and `anthropic_error_body` write; they
exist for the OpenAPI document (`/openapi.json`), which is generated from models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class ListPage[T](BaseModel):
    """A page of a list, newest first unless the route takes `order`; `after` a page's `last_id`
    fetches the next one."""

    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class Deleted(BaseModel):
    """What a DELETE answers: the id and that it is gone (`object` names what was deleted)."""

    id: str
    object: str
    deleted: Literal[True]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorPublic(BaseModel):
    """OpenAI's error envelope, on every route but Anthropic's."""

    error: ErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorPublic(BaseModel):
    """Anthropic's error envelope, on `/v1/messages` and `/v1/messages/count_tokens`."""

    type: Literal["error"] = "error"
    error: AnthropicErrorDetail


JSONObject = dict[str, Any]  # an object whose fields are someone else's (a provider's, an item's)
