"""The one retry policy of queued work (batches, jobs): what waits, how long, and what is final."""

import random

import pytest

from shared.errors import (
    AuthenticationError,
    InsufficientQuotaError,
    InvalidRequestError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from shared.services.provider_retries import with_provider_retries


class Script:
    """Raises the scripted errors in turn, then answers; records the waits asked for."""

    def __init__(self, *errors, allow=True):
        self.errors, self.calls, self.waits, self.allow = list(errors), 0, [], allow

    async def call(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "answer"

    async def wait(self, seconds):
        self.waits.append(seconds)
        return self.allow


async def run(script, **options):
    return await with_provider_retries(script.call, script.wait, rng=random.Random(1), **options)


async def test_a_rate_limit_waits_its_retry_after_then_tries_again():
    script = Script(UpstreamRateLimitError("slow", retry_after=7), RateLimitError("key rpm", retry_after=2))
    assert await run(script) == "answer"
    assert script.calls == 3
    assert 7 <= script.waits[0] <= 7.5 and 2 <= script.waits[1] <= 2.5


async def test_a_rate_limit_without_retry_after_waits_a_second_and_never_more_than_a_minute():
    script = Script(UpstreamRateLimitError("slow"), UpstreamRateLimitError("slow", retry_after=3600))
    await run(script)
    assert 1 <= script.waits[0] <= 1.5 and 60 <= script.waits[1] <= 60.5


async def test_rate_limits_are_waited_out_however_many_come():
    script = Script(*[UpstreamRateLimitError("slow", retry_after=1)] * 10)
    assert await run(script) == "answer" and script.calls == 11


@pytest.mark.parametrize(
    "fault", [UpstreamError("5xx"), UpstreamTimeoutError("slow"), ServiceUnavailableError("db")]
)
async def test_provider_faults_get_three_tries_with_growing_waits(fault):
    assert await run(Script(fault, fault)) == "answer"
    script = Script(fault, fault, fault)
    with pytest.raises(type(fault)):
        await run(script)
    assert script.calls == 3 and script.waits == [2.0, 4.0]


@pytest.mark.parametrize(
    "final", [InvalidRequestError("bad"), InsufficientQuotaError("spent"), AuthenticationError("revoked")]
)
async def test_other_errors_are_final_at_once(final):
    script = Script(final)
    with pytest.raises(type(final)):
        await run(script)
    assert script.calls == 1 and script.waits == []


async def test_work_that_must_stop_raises_the_last_error_instead_of_waiting_on():
    script = Script(UpstreamRateLimitError("slow", retry_after=30), allow=False)
    with pytest.raises(UpstreamRateLimitError):
        await run(script)
    assert script.calls == 1
