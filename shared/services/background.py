"""Work that runs after the response: usage writes, session appends, cache fills.

Tasks are kept referenced (asyncio only holds weak references) and failures are logged, never
raised into a request. `drain()` waits for what is in flight, for tests and shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("cirrus.background")


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task %s failed", task.get_name(), exc_info=exc)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            # A finished task leaves the set in its done callback, on a later turn of the loop.
            # Since Python 3.12, gather over finished tasks returns without yielding, so give the
            # loop that turn here; otherwise this loop spins forever on such a task.
            await asyncio.sleep(0)

    def __len__(self) -> int:
        return len(self._tasks)
