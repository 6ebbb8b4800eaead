"""Who background work runs as: the key a batch or job belongs to, re-read while the work runs.

Work on a queue outlives the request that started it, so the key is looked up again at every step
of a job and every request of a batch, not once: revoking a key, or lowering its budget, rpm or
models, reaches work already running within `ttl` seconds (at most 5, so a 100-request chunk does
not read the key 100 times).

Two outcomes must never be confused:
- the key is gone, revoked or expired: `AuthenticationError`, final; the work stops;
- the key could not be read (Cosmos unreachable, throttled): `ServiceUnavailableError`, transient;
  it propagates, the message is redelivered, and nothing is failed for it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from shared.errors import AuthenticationError
from shared.services.auth import Principal

MAX_TTL_S = 5.0

Lookup = Callable[[str], Awaitable[Principal]]
Clock = Callable[[], float]


class KeyOwners:
    """`current(key_id)`: the key's principal as of at most `ttl` seconds ago."""

    def __init__(self, lookup: Lookup, *, ttl: float = MAX_TTL_S, clock: Clock = time.monotonic) -> None:
        self._lookup = lookup
        self._ttl = min(ttl, MAX_TTL_S)
        self._clock = clock
        self._known: dict[str, tuple[float, Principal | AuthenticationError]] = {}

    async def current(self, key_id: str) -> Principal:
        """Raises AuthenticationError if the key is gone; any other error means "could not read"."""
        now = self._clock()
        known = self._known.get(key_id)
        if known is None or now - known[0] >= self._ttl:
            try:
                outcome: Principal | AuthenticationError = await self._lookup(key_id)
            except AuthenticationError as exc:
                outcome = exc
            # A failure to read is not remembered: the next call tries again.
            known = self._known[key_id] = (now, outcome)
        if isinstance(known[1], AuthenticationError):
            raise known[1]
        return known[1]
