"""The sweeper: the safety net under at-least-once delivery.

Nothing may depend on one message send succeeding. Each piece of queued work normally drives
itself (a chunk sends finalize, a job's copy looks again after the lease), but a send can fail, or
a worker can die between a state change and the message that follows it. On a timer, the sweeper
asks batches and jobs for what has stopped moving and sends its message again; every handler is
idempotent, so a message sent twice does no harm. One failing side does not stop the other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("cirrus.sweeper")

Sweep = Callable[[float], Awaitable[Any]]


class Sweeper:
    def __init__(self, **sweeps: Sweep) -> None:
        self._sweeps = sweeps  # name -> sweep(now)

    async def run(self, now: float | None = None) -> dict[str, Any]:
        """Every sweep once; what each re-drove, or `"error"` for one that failed (logged)."""
        now = time.time() if now is None else now
        outcome: dict[str, Any] = {}
        for name, sweep in self._sweeps.items():
            try:
                outcome[name] = await sweep(now)
            except Exception as exc:  # the next tick tries again; the other sweeps still run
                log.error("sweep of %s failed: %s", name, type(exc).__name__, exc_info=exc)
                outcome[name] = "error"
        log.info("sweep: %s", outcome)
        return outcome
