"""The operations a deployment serves, and the seam every OpenAI-shaped adapter implements.

MESSAGES is Anthropic's Messages API, which only Anthropic deployments serve natively
(anthropic_wire.py, its own seam); the router sends it to any other deployment as a chat.
RESPONSES is OpenAI's Responses API, which OpenAI-wire deployments flagged in the model file
serve natively (through this seam); the router sends it to any other deployment as a chat.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from shared.clients.llm.deployments import Deployment
from shared.clients.protocols import UploadedFile


class Operation(Enum):
    """An OpenAI endpoint: its path under the API base and its GenAI operation name."""

    CHAT = ("chat/completions", "chat")
    TEXT = ("completions", "text_completion")
    EMBED = ("embeddings", "embeddings")
    MESSAGES = ("v1/messages", "chat")
    RESPONSES = ("responses", "chat")
    # The rest of OpenAI's surface. Their GenAI names are LiteLLM's `mode`s for them, which is how
    # the model file and the price map say which models serve them (see `capabilities`).
    MODERATE = ("moderations", "moderation")  # JSON in and out
    IMAGE = ("images/generations", "image_generation")  # JSON in and out
    TRANSCRIBE = ("audio/transcriptions", "audio_transcription")  # multipart in
    SPEECH = ("audio/speech", "audio_speech")  # binary out
    RERANK = ("rerank", "rerank")  # JSON in and out: Cohere's shape, as vLLM and Jina serve it

    def __init__(self, path: str, genai_name: str) -> None:
        self.path = path
        self.genai_name = genai_name


@dataclass
class OpenedBytes:
    """A binary answer whose headers have arrived: its content type and its body, as it comes."""

    content_type: str
    chunks: AsyncIterator[bytes]


class ModelAdapter(Protocol):
    """Talks to one kind of provider. Failures are raised as `errors.AttemptFailed`.

    `params` is the client's request (validated OpenAI fields, `model` the public name); the
    adapter addresses the deployment itself. Returned dicts are OpenAI-shaped; the router sets
    their `model` to the public name.
    """

    async def complete(
        self, deployment: Deployment, op: Operation, params: dict[str, Any]
    ) -> dict[str, Any]: ...

    async def open_stream(
        self, deployment: Deployment, op: Operation, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """Chunks as they arrive; the connection is open once this returns, and closes with the iterator."""
        ...

    async def complete_form(
        self, deployment: Deployment, op: Operation, params: dict[str, Any], upload: UploadedFile
    ) -> dict[str, Any]:
        """`params` and the file as `multipart/form-data`; a JSON answer parsed, text as `{"text": ...}`."""
        ...

    async def open_bytes(self, deployment: Deployment, op: Operation, params: dict[str, Any]) -> OpenedBytes:
        """JSON in, a binary answer out: open once the provider has accepted the request."""
        ...

    async def aclose(self) -> None: ...
