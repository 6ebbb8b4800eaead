"""Which deployment of a model name takes the next attempt: health, limits and the strategy.

Per deployment, in this worker process (as LiteLLM's Router keeps it without Redis): requests in
flight, this minute's requests, tokens, successes and failures, recent latencies, and a cooldown.

Cooldown, with LiteLLM's rules:
- only failures that say something about the deployment count: 429, 401, 404, 408, 5xx, timeouts
  and connections that fail (not other 4xx: those are about the request);
- with `allowed_fails` set (router-wide, or per deployment in `model_info`): more failures than
  that in one minute cool the deployment down;
- otherwise: a 429, or more than half of at least 5 requests in the minute failing, cools down a
  deployment that has siblings; a 401 or 404 cools down any deployment; a deployment that is its
  name's only one is otherwise kept (cooling it down would only turn its errors into refusals);
- for `cooldown_time` seconds (router-wide or per deployment; LiteLLM's default 5 s).

Strategies (`routing_strategy`), among deployments not cooling down:
- `simple-shuffle`: random, weighted by `weight`, else `rpm`, else `tpm`, else even;
- `least-busy`: fewest requests in flight;
- `latency-based-routing`: lowest mean latency over the recent samples within `ttl` (time to first
  token for streams), untried deployments first, random among those within `lowest_latency_buffer`;
- `cost-based-routing`: cheapest input+output price per token;
- `usage-based-routing`, `usage-based-routing-v2`: fewest tokens this minute; these two also
  enforce each deployment's `rpm`/`tpm` (the others treat them as weights only, as LiteLLM does).
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shared.clients.llm.deployments import Deployment, RouterSettings
from shared.clients.llm.errors import AttemptFailed
from shared.errors import UpstreamRateLimitError

FAILURE_RATE = 0.5  # LiteLLM's DEFAULT_FAILURE_THRESHOLD_PERCENT
MIN_REQUESTS_FOR_RATE = 5  # LiteLLM's DEFAULT_FAILURE_THRESHOLD_MINIMUM_REQUESTS
LATENCY_SAMPLES = 10
_COOLDOWN_STATUSES = frozenset({401, 404, 408, 429})
_LIMITED_STRATEGIES = frozenset({"usage-based-routing", "usage-based-routing-v2"})

Clock = Callable[[], float]
PriceOf = Callable[[Deployment], tuple[float, float] | None]


@dataclass
class DeploymentHealth:
    """What this process knows of one deployment."""

    in_flight: int = 0
    cooldown_until: float = 0.0
    minute: int = -1
    requests: int = 0
    tokens: int = 0
    successes: int = 0
    failures: int = 0
    latencies: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    def roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self.minute:
            self.minute, self.requests, self.tokens, self.successes, self.failures = minute, 0, 0, 0, 0


class NoDeploymentAvailable(AttemptFailed):
    """Every deployment of the name is cooling down or at its rpm/tpm: LiteLLM's 429."""

    def __init__(self, model: str, retry_after: float | None) -> None:
        super().__init__(
            UpstreamRateLimitError(
                f"No deployment of `{model}` can take the request now; retry after the indicated delay.",
                retry_after=retry_after,
            ),
            429,
        )


class Selector:
    """Health of every deployment and the choice among a name's deployments."""

    def __init__(
        self,
        settings: RouterSettings,
        price_of: PriceOf,
        *,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._price_of = price_of
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - load balancing, not security
        self._health: dict[str, DeploymentHealth] = {}

    def health(self, deployment: Deployment) -> DeploymentHealth:
        state = self._health.get(deployment.id)
        if state is None:
            state = self._health[deployment.id] = DeploymentHealth()
        return state

    # --- choosing ---------------------------------------------------------------------------

    def available(self, group: Sequence[Deployment]) -> list[Deployment]:
        """The deployments that may take a request now."""
        now = self._clock()
        limited = self._settings.routing_strategy in _LIMITED_STRATEGIES
        out = []
        for deployment in group:
            state = self.health(deployment)
            if state.cooldown_until > now:
                continue
            if limited:
                state.roll(now)
                if (deployment.rpm is not None and state.requests >= deployment.rpm) or (
                    deployment.tpm is not None and state.tokens >= deployment.tpm
                ):
                    continue
            out.append(deployment)
        return out

    def pick(self, model: str, group: Sequence[Deployment]) -> Deployment:
        """The deployment for the next attempt; raises NoDeploymentAvailable (a 429)."""
        candidates = self.available(group)
        if not candidates:
            raise NoDeploymentAvailable(model, self._wait_for(group))
        if len(candidates) == 1:
            return candidates[0]
        strategy = self._settings.routing_strategy
        if strategy == "least-busy":
            return self._lowest(candidates, lambda d: self.health(d).in_flight)
        if strategy == "latency-based-routing":
            return self._fastest(candidates)
        if strategy == "cost-based-routing":
            return self._lowest(candidates, self._unit_price)
        if strategy in _LIMITED_STRATEGIES:
            return self._lowest(candidates, lambda d: self.health(d).tokens)
        return self._shuffle(candidates)

    def _shuffle(self, candidates: Sequence[Deployment]) -> Deployment:
        for attribute in ("weight", "rpm", "tpm"):
            weights = [getattr(d, attribute) for d in candidates]
            if any(w is not None for w in weights):
                numbers = [float(w or 0) for w in weights]
                if sum(numbers) > 0:
                    return self._rng.choices(candidates, weights=numbers)[0]
        return self._rng.choice(candidates)

    def _lowest(self, candidates: Sequence[Deployment], score: Callable[[Deployment], float]) -> Deployment:
        scored = [(score(d), d) for d in candidates]
        best = min(s for s, _ in scored)
        return self._rng.choice([d for s, d in scored if s == best])

    def _unit_price(self, deployment: Deployment) -> float:
        price = self._price_of(deployment)
        return math.inf if price is None else price[0] + price[1]

    def _fastest(self, candidates: Sequence[Deployment]) -> Deployment:
        args = self._settings.routing_strategy_args
        horizon = self._clock() - args.ttl
        means = []
        for deployment in candidates:
            recent = [seconds for at, seconds in self.health(deployment).latencies if at >= horizon]
            means.append((sum(recent) / len(recent) if recent else 0.0, deployment))
        best = min(m for m, _ in means)
        near = [d for m, d in means if m <= best * (1 + args.lowest_latency_buffer)]
        return self._rng.choice(near)

    def _wait_for(self, group: Sequence[Deployment]) -> float | None:
        now = self._clock()
        waits = [self.health(d).cooldown_until - now for d in group if self.health(d).cooldown_until > now]
        if waits:
            return min(waits)
        return 60 - now % 60  # rpm/tpm: the next minute

    # --- recording --------------------------------------------------------------------------

    def started(self, deployment: Deployment) -> None:
        state = self.health(deployment)
        state.roll(self._clock())
        state.in_flight += 1
        state.requests += 1

    def succeeded(self, deployment: Deployment, latency: float, tokens: int) -> None:
        now = self._clock()
        state = self.health(deployment)
        state.roll(now)
        state.in_flight = max(0, state.in_flight - 1)
        state.successes += 1
        state.tokens += tokens
        state.latencies.append((now, latency))

    def ended(self, deployment: Deployment) -> None:
        """An attempt that ended without a verdict on the deployment (the client went away)."""
        state = self.health(deployment)
        state.in_flight = max(0, state.in_flight - 1)

    def failed(self, deployment: Deployment, failure: AttemptFailed, group_size: int) -> None:
        now = self._clock()
        state = self.health(deployment)
        state.roll(now)
        state.in_flight = max(0, state.in_flight - 1)
        state.failures += 1
        if self._should_cool_down(deployment, failure, state, group_size):
            seconds = deployment.cooldown_time
            state.cooldown_until = now + (self._settings.cooldown_time if seconds is None else seconds)

    def _should_cool_down(
        self, deployment: Deployment, failure: AttemptFailed, state: DeploymentHealth, group_size: int
    ) -> bool:
        if self._settings.disable_cooldowns or isinstance(failure, NoDeploymentAvailable):
            return False
        status = failure.status
        if status is not None and status < 500 and status not in _COOLDOWN_STATUSES:
            return False  # about the request, not the deployment
        allowed = (
            deployment.allowed_fails if deployment.allowed_fails is not None else self._settings.allowed_fails
        )
        if allowed is not None:
            return state.failures > allowed
        single = group_size == 1
        if status == 429 and not single:
            return True
        if status in (401, 404):
            return True
        total = state.successes + state.failures
        return not single and total >= MIN_REQUESTS_FOR_RATE and state.failures / total > FAILURE_RATE
