"""One retry policy for work that calls models from a queue (batch requests, job steps).

Live traffic fails fast and lets the client decide; queued work instead waits out rate limits and
rides over passing provider faults, so a long batch or job does not fail on one 429 or 503:

- a rate limit (the key's rpm/tpm, or the provider's 429) waits its `Retry-After` (1 s when it
  gives none, at most 60 s), plus up to half a second of jitter, and tries again, for as long as
  the work may go on;
- a provider fault (5xx, timeout, unreachable, or Cirrus's own store being unavailable) is tried
  `attempts` times in all, waiting 2 s, then 4 s;
- anything else (a bad request, a spent budget, a revoked key) is final at once.

`wait(seconds)` sleeps and says whether the work may go on (False once a batch is cancelled or
expired); when it says no, the last error is raised.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from shared.errors import (
    CirrusError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamRateLimitError,
)

MAX_RATE_WAIT_S = 60.0
DEFAULT_RATE_WAIT_S = 1.0
RATE_JITTER_S = 0.5
FAULT_ATTEMPTS = 3

Wait = Callable[[float], Awaitable[bool]]


async def with_provider_retries[T](
    call: Callable[[], Awaitable[T]],
    wait: Wait,
    *,
    attempts: int = FAULT_ATTEMPTS,
    rng: random.Random | None = None,
) -> T:
    """`call()`'s result, retried by the policy in the module docstring."""
    jitter = (rng or random).uniform
    faults = 0
    last: CirrusError
    while True:
        try:
            return await call()
        except (RateLimitError, UpstreamRateLimitError) as exc:
            after = exc.retry_after if exc.retry_after is not None else DEFAULT_RATE_WAIT_S
            delay, last = min(MAX_RATE_WAIT_S, after) + jitter(0, RATE_JITTER_S), exc
        except (UpstreamError, ServiceUnavailableError) as exc:
            faults += 1
            if faults >= attempts:
                raise
            delay, last = 2.0**faults, exc
        if not await wait(delay):
            raise last
