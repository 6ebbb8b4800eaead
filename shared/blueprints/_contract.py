"""What a route promises, declared beside it and published in `/openapi.json` (`_openapi.py`).

    @bp.route(route="v1/sessions", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
    @endpoint(contract=Operation("Create a session", body=SessionCreate, returns={201: SessionPublic}))
    async def create_session(req, ctx): ...

The method and path come from the route itself, authentication and the error envelope from
`@endpoint`, and every schema from the pydantic model that validates the request or shapes the
answer, so the document cannot drift from the code. Answers relayed from a provider in OpenAI's
shape are described by the `openai` package's own models, named as `"module:Name"` so the app
never imports the SDK until the document is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel


@dataclass(frozen=True)
class ListOf:
    """A page of `item`s (`shared.models.common.ListPage`)."""

    item: type[BaseModel] | str | Any  # Any: a type pydantic can describe, e.g. dict[str, Any]


# A pydantic model, an "openai.types:Name" path (imported when the document is built), a page of
# either, or a JSON schema written out where no model exists (plain text, audio bytes, events).
Schema = type[BaseModel] | str | ListOf | dict[str, Any]

JSON = "application/json"
SSE = "text/event-stream"
FORM = "multipart/form-data"

# Schemas of answers no model describes: event streams, text and bytes, and rerank's answer, which
# is the provider's (Cohere's or Jina's) relayed as it comes.
EVENTS = {
    "type": "object",
    "description": "One server-sent event (OpenAPI 3.1 describes a stream by its events): `data` "
    "is a JSON object, or `[DONE]` at the end of a chat or completion stream.",
    "required": ["data"],
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}},
}
TEXT = {"type": "string"}
BYTES = {"type": "string", "format": "binary"}
RERANKED = {
    "type": "object",
    "required": ["results"],
    "properties": {
        "id": {"type": "string"},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "relevance_score"],
                "properties": {"index": {"type": "integer"}, "relevance_score": {"type": "number"}},
            },
        },
    },
}


@dataclass(frozen=True)
class Param:
    """A query parameter or request header the route reads itself."""

    name: str
    schema: dict[str, Any]
    description: str
    where: Literal["query", "header"] = "query"

    @classmethod
    def integer(cls, name: str, default: int, *, low: int, high: int, description: str) -> Param:
        return cls(
            name, {"type": "integer", "minimum": low, "maximum": high, "default": default}, description
        )

    @classmethod
    def text(cls, name: str, description: str, **schema: Any) -> Param:
        return cls(name, {"type": "string", **schema}, description)


def page_params(default: int = 20, high: int = 100) -> tuple[Param, ...]:
    """`limit` and `after`, as every list route takes them."""
    return (
        Param.integer("limit", default, low=1, high=high, description="How many to return."),
        Param.text("after", "The `last_id` of the previous page."),
    )


@dataclass(frozen=True)
class Reply:
    """One answer of a route: a status, its description and a schema per media type."""

    schema: Schema
    media: str = JSON
    description: str | None = None
    also: dict[str, Schema] = field(default_factory=dict)  # other media types for the same status


@dataclass(frozen=True)
class Operation:
    """The contract of one route (see the module docstring). `errors` are the statuses beyond
    those every route of its kind may answer (`_openapi.error_statuses`)."""

    summary: str
    body: type[BaseModel] | None = None
    body_media: str = JSON
    body_required: bool = True
    form_file: str | None = None  # a multipart body: `body`'s fields plus this binary field
    params: tuple[Param, ...] = ()
    returns: dict[int, Schema | Reply] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    calls_model: bool = False  # a provider answers: 502, 503 and 504 are possible
    example: dict[str, Any] | None = None
    tags: tuple[str, ...] = ()
    # Filled in by `@endpoint`, which knows them.
    authenticated: bool = True
    anthropic: bool = False
    query_token: bool = False  # also takes an event-stream `?token=`


F = TypeVar("F", bound=Callable[..., Any])
ATTRIBUTE = "cirrus_contract"


def documented(operation: Operation) -> Callable[[F], F]:
    """Attach `operation` to a function that does not go through `@endpoint` (liveness)."""

    def attach(function: F) -> F:
        setattr(function, ATTRIBUTE, operation)
        return function

    return attach


def contract_of(function: Callable[..., Any]) -> Operation | None:
    return getattr(function, ATTRIBUTE, None)
