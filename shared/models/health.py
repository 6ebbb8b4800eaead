"""Cirrus's own health envelopes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class CheckPublic(BaseModel):
    status: Literal["ok", "error"]
    latency_ms: float
    error: str | None = None
    detail: dict[str, Any] | None = None


class ReadinessPublic(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, CheckPublic]


class LivenessPublic(BaseModel):
    status: Literal["ok"]
