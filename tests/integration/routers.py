"""Helpers for the data-plane suites: deployments on the fake provider, through either adapter.

Every suite that uses `ADAPTERS` runs once per adapter: `native` (the OpenAI-wire adapter) and
`litellm` (the same deployment forced through LiteLLM with `model_info.adapter`), so both must
give the same observable results.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Any

import httpx

from shared.clients.llm import ModelRouter
from shared.config import ModelConfig

ADAPTERS = ["native", "litellm"]


def deployment(
    name: str, base: str, profile: str = "", *, adapter: str = "native", id_: str | None = None, **params: Any
) -> dict[str, Any]:
    """A deployment of the fake provider (with a fixed behaviour when `profile` is given)."""
    api_base = f"{base}/profile/{profile}/v1" if profile else f"{base}/v1"
    info: dict[str, Any] = {"id": id_ or f"{name}-{profile or 'ok'}"}
    if adapter == "litellm":
        info["adapter"] = "litellm"
    return {
        "model_name": name,
        "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": api_base, "api_key": "fake", **params},
        "model_info": info,
    }


def build_router(adapter: str, deployments: list[dict[str, Any]], **settings: Any) -> ModelRouter:
    """Cirrus's router over `deployments`, each forced through `adapter`."""
    for entry in deployments:
        if adapter == "litellm":
            entry.setdefault("model_info", {})["adapter"] = "litellm"
    return ModelRouter(
        ModelConfig.model_validate(
            {"model_list": deployments, "router_settings": {"num_retries": 0, **settings}}
        )
    )


def upstream_requests(provider: httpx.Client, fragment: str = "") -> list[dict[str, Any]]:
    return [r for r in provider.get("/_control/requests").json() if fragment in r["path"]]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        (c["choices"][0].get("delta") or {}).get("content") or c["choices"][0].get("text") or ""
        for c in chunks
        if c["choices"]
    )


def wav_clip(seconds: float, rate: int = 16_000) -> bytes:
    """A silent 16-bit mono PCM WAV of `seconds`."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * round(seconds * rate))
    return buffer.getvalue()


@dataclass
class BytesUpload:
    """An `UploadedFile` held in memory, counting how often it was opened (once per attempt)."""

    data: bytes
    filename: str = "clip.wav"
    content_type: str = "audio/wav"
    opened: int = 0

    @property
    def size(self) -> int:
        return len(self.data)

    def open(self) -> io.BytesIO:
        self.opened += 1
        return io.BytesIO(self.data)
