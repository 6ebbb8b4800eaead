"""Event-stream tokens (shared/services/stream_tokens.py): scoped to one job and one route, signed,
expiring, never an API key. That the key behind one is read again when it is used (a revoked key's
tokens stop) is tested end to end, in tests/e2e/test_job_event_tokens.py."""

from __future__ import annotations

import base64
import json

import pytest

from shared.errors import AuthenticationError
from shared.services.auth import MASTER, Principal
from shared.services.stream_tokens import (
    JOB_EVENTS,
    TOKEN_TTL_S,
    StreamTokens,
    TokenScope,
    signing_key,
)
from tests.fakes import FakeClock

KEY = Principal(key_id="key_0123456789abcdef", is_master=False)
JOB = "job_aaaaaaaaaaaaaaaaaaaaaaaa"
OTHER_JOB = "job_bbbbbbbbbbbbbbbbbbbbbbbb"
HASH_SECRET = b"h" * 40


def tokens(clock: FakeClock | None = None) -> StreamTokens:
    return StreamTokens(signing_key(HASH_SECRET), clock=clock or FakeClock(1_000.0))


def refused(call, message: str) -> AuthenticationError:
    with pytest.raises(AuthenticationError, match=message) as info:
        call()
    assert (info.value.status, info.value.code, info.value.param) == (401, "invalid_token", "token")
    return info.value


def test_a_token_names_the_key_it_was_minted_by_for_its_job_and_route() -> None:
    clock = FakeClock(1_000.0)
    minted = tokens(clock).mint(KEY, JOB_EVENTS, JOB)
    assert minted.expires_at == 1_000 + TOKEN_TTL_S
    assert minted.token.startswith("cst_")
    assert tokens(clock).verify(minted.token, JOB_EVENTS, JOB) == KEY.key_id
    assert (
        tokens(clock).verify(tokens(clock).mint(MASTER, JOB_EVENTS, JOB).token, JOB_EVENTS, JOB) == "master"
    )


def test_a_token_is_refused_for_another_job_or_another_route() -> None:
    minted = tokens().mint(KEY, JOB_EVENTS, JOB).token
    refused(lambda: tokens().verify(minted, JOB_EVENTS, OTHER_JOB), "another job or another route")
    other_route = TokenScope("responses.events", "job_id")  # same route value, another purpose
    refused(lambda: tokens().verify(minted, other_route, JOB), "another job or another route")


def test_a_token_expires() -> None:
    clock = FakeClock(1_000.0)
    minted = tokens(clock).mint(KEY, JOB_EVENTS, JOB).token
    clock.now = 1_000.0 + TOKEN_TTL_S - 1
    assert tokens(clock).verify(minted, JOB_EVENTS, JOB) == KEY.key_id
    clock.now = 1_000.0 + TOKEN_TTL_S
    refused(lambda: tokens(clock).verify(minted, JOB_EVENTS, JOB), "expired")


def test_an_altered_or_foreign_token_is_refused() -> None:
    minted = tokens().mint(KEY, JOB_EVENTS, JOB).token
    payload, signature = minted.removeprefix("cst_").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "k": "master"}).encode()).rstrip(b"=").decode()
    foreign = StreamTokens(signing_key(b"x" * 40)).mint(KEY, JOB_EVENTS, JOB).token
    for token in (f"cst_{forged}.{signature}", foreign, minted[:-2], "cst_", "", "cst_a.b.c", "\u00e9" * 40):
        refused(lambda token=token: tokens().verify(token, JOB_EVENTS, JOB), "Invalid event-stream token")


def test_an_api_key_is_never_accepted_in_a_url() -> None:
    for key in ("sk-cirrus-dev-master-key", "sk-cirrus-0123456789abcdef" + "x" * 40, "sk-proj-abc"):
        error = refused(lambda key=key: tokens().verify(key, JOB_EVENTS, JOB), "never accepted in a URL")
        assert key not in error.message


def test_the_signing_key_is_derived_not_the_hash_secret_itself() -> None:
    assert signing_key(HASH_SECRET) != HASH_SECRET
    assert signing_key(HASH_SECRET) == signing_key(HASH_SECRET)
    from shared.services.console_sessions import signing_key as console_key

    assert signing_key(HASH_SECRET) != console_key(HASH_SECRET)  # one purpose per derived key
