"""Readiness: every dependency a request may need answers, each within a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from shared.models.health import CheckPublic, ReadinessPublic

CHECK_TIMEOUT_S = 5.0

Check = Callable[[], Awaitable[dict[str, Any] | None]]


class HealthService:
    def __init__(self, checks: Mapping[str, Check]) -> None:
        self._checks = dict(checks)

    async def readiness(self) -> ReadinessPublic:
        """Run every check concurrently; ready only if all pass."""
        results = await asyncio.gather(*(_timed(check) for check in self._checks.values()))
        checks = dict(zip(self._checks, results, strict=True))
        ready = all(c.status == "ok" for c in checks.values())
        return ReadinessPublic(status="ready" if ready else "not_ready", checks=checks)


async def _timed(check: Check) -> CheckPublic:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except Exception as exc:  # a failed check is a result, not an error of the endpoint
        # The class name only: messages can carry endpoints or account names.
        error = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        return CheckPublic(status="error", latency_ms=_ms(started), error=error)
    return CheckPublic(status="ok", latency_ms=_ms(started), detail=detail)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
