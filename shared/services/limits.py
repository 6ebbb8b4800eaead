"""Per-key rate limits, parallel-request caps and budgets, shared by every instance through Cosmos.

Each limited key has one state item beside it in the `keys` container (same partition):

    {"id": "limits_<key id>", "minute": 29411520, "requests": 12, "tokens": 3400,
     "period": "86400s:20424", "spent_usd": 1.25, "holds": {"<hold id>": [0.004, <expires at>]}}

Admitting a request is a read-modify-write of that item guarded by its ETag, retried on a
conflict (requests of one worker that arrive together share one write). It checks the minute's
requests and tokens, the number of requests in flight and the budget, then counts the request
and places a *hold* for the request's maximum cost. Settling after the call removes the hold and
adds the real cost and tokens. A request is admitted while spent plus held is under the budget,
so however many requests race, the spend can pass the budget by at most one request's maximum
cost. A hold whose instance died before settling lapses after `HOLD_LEASE_S`. A model without a
known price (itself or a fallback it may reach) is refused to keys with a budget (403
`model_price_unknown`): its spend could not be counted, so the budget would not hold.

Requests and tokens are counted in fixed one-minute windows (UTC minutes), as OpenAI's headers
describe them; budget periods are UTC-calendar windows of `budget_duration` (see `Duration`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.clients.protocols import DocumentStore
from shared.errors import (
    CirrusError,
    ConflictError,
    InsufficientQuotaError,
    PermissionDeniedError,
    PreconditionFailedError,
    RateLimitError,
    ServiceUnavailableError,
    TokenRateLimitError,
)
from shared.models.keys import Duration
from shared.services.auth import Limits, Principal

log = logging.getLogger("cirrus.limits")

CONTAINER = "keys"
HOLD_LEASE_S = 900.0  # longer than any request may run (Azure drops HTTP requests at 230 s)
ATTEMPTS = 60
TOTAL_PERIOD = "total"


@dataclass
class Admission:
    """A request let through: its hold, and the rate-limit headers to send with its response."""

    key_id: str
    hold_id: str | None
    headers: dict[str, str] = field(default_factory=dict)
    needs_settling: bool = True  # False when only requests are counted: nothing to add afterwards


Change = Callable[["_State", float], Any]


@dataclass
class _Op:
    change: Change
    limits: Limits
    future: asyncio.Future[Any]


@dataclass
class _State:
    minute: int
    requests: int
    tokens: int
    period: str
    spent_usd: float
    holds: dict[str, list[float]]

    @classmethod
    def of(cls, doc: dict[str, Any] | None, minute: int, period: str, now: float) -> _State:
        doc = doc or {}
        same_minute = doc.get("minute") == minute
        same_period = doc.get("period") == period
        holds = {h: v for h, v in (doc.get("holds") or {}).items() if v[1] > now}
        return cls(
            minute=minute,
            requests=int(doc.get("requests", 0)) if same_minute else 0,
            tokens=int(doc.get("tokens", 0)) if same_minute else 0,
            period=period,
            spent_usd=float(doc.get("spent_usd", 0.0)) if same_period else 0.0,
            holds=holds,
        )

    @property
    def held_usd(self) -> float:
        return sum(usd for usd, _ in self.holds.values())


class KeyLimiter:
    def __init__(
        self,
        documents: DocumentStore,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._documents = documents
        self._clock = clock
        self._sleep = sleep
        self._pending: dict[str, list[_Op]] = {}  # changes waiting for the next write, per key
        self._writers: dict[str, asyncio.Task[None]] = {}
        # The state item as this worker last wrote it: the next write tries that ETag without a
        # read first, and reads only if another worker wrote meanwhile.
        self._last: dict[str, dict[str, Any]] = {}

    async def admit(self, principal: Principal, max_cost: Callable[[], float | None]) -> Admission | None:
        """Count this request against the key's limits, or raise 429. None for an unlimited key.

        `max_cost` (USD, None if the model has no price) is only worked out for keys with a budget.
        """
        limits = principal.limits
        if principal.is_master or not limits.any:
            return None
        reserve = 0.0
        if limits.max_budget is not None:
            cost = max_cost()
            if cost is None:  # the spend could not be counted, so the budget would not hold
                raise PermissionDeniedError(
                    "This model has no known price, so a key with a budget cannot use it. Ask the "
                    "gateway's administrator to price it (`input_cost_per_token` and "
                    "`output_cost_per_token`, or its unit prices, in the model file).",
                    param="model",
                    code="model_price_unknown",
                )
            reserve = cost
        hold_id = uuid.uuid4().hex[:16] if limits.max_parallel or limits.max_budget is not None else None

        def admit(state: _State, now: float) -> Admission:
            try:
                _check(limits, state, now)
            except CirrusError as exc:
                exc.extra_headers.update(rate_headers(limits, state, now))
                raise
            state.requests += 1
            if hold_id is not None:
                state.holds[hold_id] = [reserve, now + HOLD_LEASE_S]
            return Admission(
                principal.limit_id,
                hold_id,
                rate_headers(limits, state, now),
                needs_settling=hold_id is not None or limits.tpm is not None,
            )

        return await self._submit(principal.limit_id, limits, admit)

    async def settle(
        self, principal: Principal, admission: Admission, cost_usd: float | None, tokens: int
    ) -> None:
        """Release the request's hold and add what it really cost and used."""

        def settle(state: _State, now: float) -> None:
            state.holds.pop(admission.hold_id or "", None)
            state.spent_usd += cost_usd or 0.0
            state.tokens += tokens

        try:
            await self._submit(principal.limit_id, principal.limits, settle)
        except Exception as exc:  # the hold lapses on its own; the spend is in the usage records
            log.warning("settling key %s failed (%s)", principal.limit_id, type(exc).__name__)

    async def state(self, key_id: str, limits: Limits) -> tuple[float, float | None]:
        """The key's spend in the current budget period, and when that period ends."""
        now = self._clock()
        period, reset_at = budget_period(limits.budget_duration, now)
        doc = await self._documents.read(CONTAINER, state_id(key_id), key_id)
        state = _State.of(doc, minute_of(now), period, now)
        return state.spent_usd, reset_at

    async def _submit(self, key_id: str, limits: Limits, change: Change) -> Any:
        """Apply `change` to the key's state in the next write of it from this worker.

        Group commit: changes to one key that arrive while a write of it is in flight wait and
        go together in the next one, so a busy key costs one write per round trip per worker
        instead of one per request, and requests of one worker never race each other.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key_id, []).append(_Op(change, limits, future))
        if key_id not in self._writers:
            self._writers[key_id] = asyncio.get_running_loop().create_task(
                self._write_pending(key_id), name=f"limits-{key_id}"
            )
        return await future

    async def _write_pending(self, key_id: str) -> None:
        try:
            while ops := self._pending.pop(key_id, None):
                try:
                    outcomes = await self._mutate(key_id, ops)
                except Exception as exc:
                    outcomes = [exc] * len(ops)
                for op, outcome in zip(ops, outcomes, strict=True):
                    if op.future.done():  # its request was cancelled meanwhile
                        continue
                    if isinstance(outcome, BaseException):
                        op.future.set_exception(outcome)
                    else:
                        op.future.set_result(outcome)
        finally:  # no await between the empty check above and this: no change is stranded
            del self._writers[key_id]

    async def _mutate(self, key_id: str, ops: list[_Op]) -> list[Any]:
        """Apply every op to the state item in one ETag-guarded write; each op's result or error."""
        limits = ops[-1].limits  # the newest view of the key's limits decides the budget period
        for attempt in range(ATTEMPTS):
            now = self._clock()
            period, _ = budget_period(limits.budget_duration, now)
            doc = self._last.pop(key_id, None) if attempt == 0 else None
            if doc is None:
                doc = await self._documents.read(CONTAINER, state_id(key_id), key_id)
            state = _State.of(doc, minute_of(now), period, now)
            outcomes: list[Any] = []
            for op in ops:
                try:
                    outcomes.append(op.change(state, now))
                except CirrusError as exc:  # refused: a check raises before it changes anything
                    outcomes.append(exc)
            item = {
                "id": state_id(key_id),
                "pk": key_id,
                "object": "key.limits",
                "minute": state.minute,
                "requests": state.requests,
                "tokens": state.tokens,
                "period": state.period,
                "spent_usd": state.spent_usd,
                "holds": state.holds,
            }
            try:
                if doc is None:
                    stored = await self._documents.create(CONTAINER, item)
                else:
                    stored = await self._documents.replace(CONTAINER, item, etag=doc.get("_etag"))
            except (ConflictError, PreconditionFailedError):
                if attempt:  # another worker wrote first: back off a random, growing while
                    await self._sleep(random.uniform(0, min(0.2, 0.004 * 2 ** min(attempt, 6))))  # noqa: S311
                continue
            self._last[key_id] = stored
            return outcomes
        raise ServiceUnavailableError("Too many concurrent requests for this key; retry shortly.")


def _check(limits: Limits, state: _State, now: float) -> None:
    until_next_minute = (state.minute + 1) * 60 - now
    if limits.rpm is not None and state.requests >= limits.rpm:
        raise RateLimitError(
            f"Rate limit reached for requests: limit {limits.rpm} per minute for this key. "
            f"Please try again in {until_next_minute:.0f}s.",
            retry_after=until_next_minute,
        )
    if limits.tpm is not None and state.tokens >= limits.tpm:
        raise TokenRateLimitError(
            f"Rate limit reached for tokens: limit {limits.tpm} per minute for this key, "
            f"used {state.tokens}. Please try again in {until_next_minute:.0f}s.",
            retry_after=until_next_minute,
        )
    if limits.max_parallel is not None and len(state.holds) >= limits.max_parallel:
        raise RateLimitError(
            f"Too many parallel requests: this key allows {limits.max_parallel} at a time.",
            retry_after=1,
        )
    if limits.max_budget is not None and state.spent_usd + state.held_usd >= limits.max_budget:
        _, reset_at = budget_period(limits.budget_duration, now)
        raise InsufficientQuotaError(
            f"This key's budget of ${limits.max_budget:g} is spent"
            + (f" until the period resets in {reset_at - now:.0f}s." if reset_at else ".")
            + " Ask the gateway's administrator to raise it.",
            retry_after=reset_at - now if reset_at else None,
        )


def rate_headers(limits: Limits, state: _State, now: float) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers for the key's request and token limits."""
    reset = go_duration((state.minute + 1) * 60 - now)
    headers: dict[str, str] = {}
    if limits.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(limits.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, limits.rpm - state.requests))
        headers["x-ratelimit-reset-requests"] = reset
    if limits.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(limits.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, limits.tpm - state.tokens))
        headers["x-ratelimit-reset-tokens"] = reset
    return headers


def go_duration(seconds: float) -> str:
    """A duration as OpenAI's headers write it: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def budget_period(budget_duration: str | None, now: float) -> tuple[str, float | None]:
    if budget_duration is None:
        return TOTAL_PERIOD, None
    return Duration.parse(budget_duration).window(now)


def minute_of(now: float) -> int:
    return int(now // 60)


def state_id(key_id: str) -> str:
    return f"limits_{key_id}"
