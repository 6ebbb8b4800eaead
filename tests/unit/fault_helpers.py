"""Small fault wrappers around the in-memory fakes, for tests of what a worker does when its
storage fails underneath it."""

from __future__ import annotations

from typing import Any

from tests.fakes import InMemoryDocumentStore


class FlakyDocuments:
    """An InMemoryDocumentStore whose methods raise on demand: `failing["replace"] = exc` makes
    every `replace` raise `exc` (raw SDK-style exceptions too, not only CirrusErrors) until the
    entry is removed. Everything else goes to the store underneath."""

    def __init__(self, inner: InMemoryDocumentStore) -> None:
        self.inner = inner
        self.failing: dict[str, BaseException] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            fault = self.failing.get(name)
            if fault is not None:
                raise fault
            return await method(*args, **kwargs)

        return call
