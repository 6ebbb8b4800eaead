"""`POST /v1/moderations`: OpenAI's request, checked before any provider call."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.models.requests import OpenAIRequest


class ModerationImageUrl(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str = Field(min_length=1)


class ModerationTextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str


class ModerationImagePart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["image_url"]
    image_url: ModerationImageUrl


ModerationPart = Annotated[ModerationTextPart | ModerationImagePart, Field(discriminator="type")]


class ModerationCreate(OpenAIRequest):
    """A string, a list of strings (one result each), or a list of text and image parts (one
    result for them all)."""

    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[list[ModerationPart], Field(min_length=1)]
    )

    def texts(self) -> list[str]:
        """The text to classify, for a token count (images are not counted)."""
        if isinstance(self.input, str):
            return [self.input]
        return [item if isinstance(item, str) else getattr(item, "text", "") for item in self.input]
