"""The operations a deployment serves, and the seam every OpenAI-shaped adapter implements.

MESSAGES is Anthropic's Messages API, which only Anthropic deployments serve natively
(anthropic_wire.py, its own seam); the router sends it to any other deployment as a chat.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from enum import Enum
from typing import Any, Protocol

from shared.clients.llm.deployments import Deployment


class Operation(Enum):
    """An OpenAI endpoint: its path under the API base and its GenAI operation name."""

    CHAT = ("chat/completions", "chat")
    TEXT = ("completions", "text_completion")
    EMBED = ("embeddings", "embeddings")
    MESSAGES = ("v1/messages", "chat")

    def __init__(self, path: str, genai_name: str) -> None:
        self.path = path
        self.genai_name = genai_name


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

    async def aclose(self) -> None: ...
