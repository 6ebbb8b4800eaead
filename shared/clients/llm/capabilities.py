"""Which deployments serve the surfaces beyond chat: moderations, images, audio and rerank.

A deployment serves such an operation when its `model_info.mode` (LiteLLM's field: `moderation`,
`image_generation`, `audio_transcription`, `audio_speech`, `rerank`) is the operation's, else, with
no mode in the file, when LiteLLM's price map gives its model that mode or lists the operation's
path in the model's `supported_endpoints`. A deployment whose mode nobody knows (a self-hosted model
the map has never heard of) is taken to serve it: its provider decides.

So a request for images to a chat model is refused with a 400 before any provider is called,
instead of reaching a provider that answers 404 and cooling a healthy chat deployment down.
Chat, completions and embeddings are not checked: any deployment may be asked for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.clients.llm.deployments import Deployment
from shared.clients.llm.operations import Operation

SURFACES = frozenset(
    {Operation.MODERATE, Operation.IMAGE, Operation.TRANSCRIBE, Operation.SPEECH, Operation.RERANK}
)
BY_PATH = {op.path: op for op in SURFACES}


def serves(deployment: Deployment, op: Operation, known: Mapping[str, Any]) -> bool:
    """Whether `deployment` serves `op`; `known` is its model's entry in LiteLLM's price map."""
    if op not in SURFACES:
        return True
    declared = deployment.model_info.get("mode")
    source = deployment.model_info if declared else known
    mode = source.get("mode")
    if not mode or mode == op.genai_name:
        return True
    return f"/v1/{op.path}" in (source.get("supported_endpoints") or ())
