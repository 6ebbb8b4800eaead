"""Virtual keys and their limits, on in-memory stores with a controlled clock."""

import asyncio
import calendar
import json

import pytest
from pydantic import SecretStr, ValidationError

from shared.errors import (
    AuthenticationError,
    InsufficientQuotaError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    TokenRateLimitError,
)
from shared.models.keys import Duration, KeyCreate, KeyUpdate
from shared.services.audit import AuditLog
from shared.services.auth import MASTER, AuthService, Principal
from shared.services.keys import KeyService
from shared.services.limits import KeyLimiter, go_duration
from tests.fakes import TEST_ACTOR, FakeClock, InMemoryDocumentStore

MASTER_KEY = "sk-master-" + "m" * 40


@pytest.fixture
def clock():
    return FakeClock(calendar.timegm((2026, 11, 22, 10, 0, 0)))


@pytest.fixture
def documents():
    return InMemoryDocumentStore()


@pytest.fixture
def keys(documents, clock):
    limiter = KeyLimiter(documents, clock=clock)
    service = None

    async def lookup(key_id):
        return await service.lookup(key_id)

    auth = AuthService(SecretStr(MASTER_KEY), SecretStr("h" * 40), lookup)
    service = KeyService(documents, auth, limiter, AuditLog(documents))
    service.auth, service.limiter = auth, limiter
    return service


async def test_a_created_key_authenticates_and_is_stored_only_as_a_keyed_hash(keys, documents):
    created = await keys.create(KeyCreate(key_alias="app", team_id="team-a", models=["m1"]), TEST_ACTOR)
    assert created.key.startswith("sk-cirrus-") and created.key_name == created.key[:18] + "..."
    stored = json.dumps([list(c.values()) for c in documents.items.values()])
    assert created.key not in stored and created.key[18:] not in stored
    principal = await keys.auth.authenticate(f"Bearer {created.key}")
    assert principal == Principal(created.id, False, "team-a", frozenset({"m1"}), principal.limits)
    assert principal.may_use("m1") and not principal.may_use("m2")
    assert (await keys.auth.authenticate(None, MASTER_KEY)) is MASTER


@pytest.mark.parametrize("header", [None, "", "Bearer ", "Basic abc", "Bearer sk-cirrus-nope"])
async def test_missing_or_malformed_keys_are_401(keys, header):
    with pytest.raises(AuthenticationError):
        await keys.auth.authenticate(header)


async def test_a_header_key_counts_when_authorization_carries_no_bearer_key(keys):
    # Anthropic SDKs send `x-api-key`; some clients add an unrelated Authorization header.
    assert (await keys.auth.authenticate("Basic abc", MASTER_KEY)) is MASTER
    assert (await keys.auth.authenticate("Bearer ", MASTER_KEY)) is MASTER
    with pytest.raises(AuthenticationError, match="Incorrect"):  # a bearer key, when sent, decides
        await keys.auth.authenticate("Bearer sk-cirrus-nope", MASTER_KEY)


async def test_a_forged_secret_for_a_real_key_id_is_401(keys):
    created = await keys.create(KeyCreate(), TEST_ACTOR)
    forged = created.key[:26] + ("A" if created.key[26] != "A" else "B") + created.key[27:]
    with pytest.raises(AuthenticationError, match="Incorrect"):
        await keys.auth.authenticate(f"Bearer {forged}")


async def test_rotation_replaces_the_secret_and_revocation_stops_it(keys):
    created = await keys.create(KeyCreate(), TEST_ACTOR)
    rotated = await keys.rotate(created.id, TEST_ACTOR)
    assert rotated.key != created.key and rotated.id == created.id
    with pytest.raises(AuthenticationError):
        await keys.auth.authenticate(f"Bearer {created.key}")
    assert (await keys.auth.authenticate(f"Bearer {rotated.key}")).key_id == created.id
    revoked = await keys.revoke(created.id, TEST_ACTOR)
    assert revoked.status == "revoked" and revoked.key is None
    with pytest.raises(AuthenticationError, match="revoked"):
        await keys.auth.authenticate(f"Bearer {rotated.key}")
    with pytest.raises(NotFoundError):
        await keys.rotate(created.id, TEST_ACTOR)


async def test_an_expired_key_is_401(keys):
    created = await keys.create(KeyCreate(expires="2020-01-01T00:00:00Z"), TEST_ACTOR)
    assert created.status == "expired" and created.expires.startswith("2020-01-01")
    with pytest.raises(AuthenticationError, match="expired"):
        await keys.auth.authenticate(f"Bearer {created.key}")


async def test_update_changes_only_the_fields_given_and_null_clears(keys):
    created = await keys.create(KeyCreate(rpm_limit=5, tpm_limit=100, metadata={"owner": "x"}), TEST_ACTOR)
    updated = await keys.update(
        created.id, KeyUpdate.model_validate({"rpm_limit": None, "key_alias": "b"}), TEST_ACTOR
    )
    assert (updated.rpm_limit, updated.tpm_limit, updated.key_alias) == (None, 100, "b")
    assert updated.metadata == {"owner": "x"}


async def test_list_is_newest_first_paged_and_hides_revoked(keys, documents):
    ids = [(await keys.create(KeyCreate(key_alias=str(i)), TEST_ACTOR)).id for i in range(3)]
    await keys.revoke(ids[0], TEST_ACTOR)
    page = await keys.list_page(limit=10, after=None, include_revoked=True)
    assert {k.id for k in page.data} == set(ids)
    assert all(k.key is None for k in page.data)  # a list never carries secrets


def test_key_fields_follow_litellm_and_refuse_unknown_ones():
    body = KeyCreate.model_validate({"name": "app", "duration": "30d", "budget_duration": "monthly"})
    assert body.key_alias == "app" and body.budget_duration == "monthly"
    with pytest.raises(ValidationError, match="key"):
        KeyCreate.model_validate({"key": "sk-my-own"})  # the secret is always generated
    with pytest.raises(ValidationError, match="duration"):
        KeyCreate.model_validate({"budget_duration": "fortnightly"})
    with pytest.raises(ValidationError, match="either"):
        KeyCreate.model_validate({"duration": "1d", "expires": 1})
    assert KeyCreate.model_validate({"budget_duration": "total"}).budget_duration is None


@pytest.mark.parametrize(
    "fields",
    [{"expires": 6.6e16}, {"expires": -1}, {"duration": "999999w"}, {"duration": "999999mo"}],
)
def test_an_expiry_past_the_year_9999_is_refused(fields):
    # Found by fuzzing POST /v1/keys: such a key was stored, then every GET /v1/keys answered 500
    # (its expiry cannot be written as ISO 8601).
    with pytest.raises(ValidationError, match=r"expires|duration"):
        KeyCreate.model_validate(fields)
    assert KeyCreate.model_validate({"duration": "520w"}).duration == "520w"


def test_budget_windows_follow_the_utc_calendar():
    t = calendar.timegm((2026, 11, 22, 10, 30, 0))
    assert Duration.parse("daily").window(t)[1] == calendar.timegm((2026, 11, 23, 0, 0, 0))
    assert Duration.parse("1mo").window(t)[1] == calendar.timegm((2026, 12, 1, 0, 0, 0))
    assert Duration.parse("monthly").window(calendar.timegm((2026, 12, 31, 23, 0, 0)))[1] == (
        calendar.timegm((2027, 1, 1, 0, 0, 0))
    )
    assert Duration.parse("1h").window(t)[1] == calendar.timegm((2026, 11, 22, 11, 0, 0))
    assert Duration.parse("1mo").seconds_from(calendar.timegm((2026, 1, 31, 0, 0, 0))) == (
        calendar.timegm((2026, 2, 28, 0, 0, 0))
    )


def test_reset_durations_are_written_as_openai_does():
    assert [go_duration(s) for s in (0.02, 1, 1.5, 360, 61.25)] == ["20ms", "1s", "1.5s", "6m0s", "1m1.25s"]


# --- enforcement ----------------------------------------------------------------------------


async def principal_for(keys, **limits) -> Principal:
    created = await keys.create(KeyCreate(**limits), TEST_ACTOR)
    return await keys.auth.authenticate(f"Bearer {created.key}")


async def test_rpm_limit_counts_requests_per_minute_with_headers(keys, clock):
    principal = await principal_for(keys, rpm_limit=2)
    first = await keys.limiter.admit(principal, lambda: None)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"] == "1m0s"
    clock.now += 15
    second = await keys.limiter.admit(principal, lambda: None)
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert second.headers["x-ratelimit-reset-requests"] == "45s"
    with pytest.raises(RateLimitError) as info:
        await keys.limiter.admit(principal, lambda: None)
    assert info.value.status == 429 and info.value.headers()["retry-after"] == "45"
    assert info.value.headers()["x-ratelimit-remaining-requests"] == "0"  # the 429 carries them too
    clock.now += 45  # the next minute
    later = await keys.limiter.admit(principal, lambda: None)
    assert later.headers["x-ratelimit-remaining-requests"] == "1"


async def test_tpm_limit_counts_the_tokens_settled(keys, clock):
    principal = await principal_for(keys, tpm_limit=100)
    admission = await keys.limiter.admit(principal, lambda: None)
    assert admission.headers["x-ratelimit-remaining-tokens"] == "100"
    await keys.limiter.settle(principal, admission, 0.0, 120)
    with pytest.raises(TokenRateLimitError) as info:
        await keys.limiter.admit(principal, lambda: None)
    assert info.value.type == "tokens"
    clock.now += 60
    later = await keys.limiter.admit(principal, lambda: None)
    assert later.headers["x-ratelimit-remaining-tokens"] == "100"


async def test_parallel_limit_holds_until_settled_or_the_lease_lapses(keys, clock):
    principal = await principal_for(keys, max_parallel_requests=1)
    first = await keys.limiter.admit(principal, lambda: None)
    with pytest.raises(RateLimitError, match="parallel"):
        await keys.limiter.admit(principal, lambda: None)
    await keys.limiter.settle(principal, first, None, 0)
    await keys.limiter.admit(principal, lambda: None)  # free again; now never settled
    clock.now += 901  # its instance died: the hold lapses
    await keys.limiter.admit(principal, lambda: None)


async def test_budget_reserves_the_maximum_and_settles_the_real_cost(keys, clock):
    principal = await principal_for(keys, max_budget=1.0, budget_duration="1d")
    a = await keys.limiter.admit(principal, lambda: 0.6)
    b = await keys.limiter.admit(principal, lambda: 0.6)  # 0.6 held < 1.0: admitted
    with pytest.raises(InsufficientQuotaError) as info:  # 1.2 held: refused
        await keys.limiter.admit(principal, lambda: 0.1)
    assert info.value.status == 429 and info.value.code == "insufficient_quota"
    await keys.limiter.settle(principal, a, 0.1, 10)
    await keys.limiter.settle(principal, b, 0.2, 10)
    shown = await keys.get(principal.key_id)
    assert shown.spend == pytest.approx(0.3)
    assert shown.budget_reset_at == calendar.timegm((2026, 11, 23, 0, 0, 0))
    await keys.limiter.settle(principal, await keys.limiter.admit(principal, lambda: 0.5), 0.7, 1)
    with pytest.raises(InsufficientQuotaError):
        await keys.limiter.admit(principal, lambda: 0.0)
    clock.now += 14 * 3600  # past midnight UTC: a new period
    await keys.limiter.admit(principal, lambda: 0.5)
    assert (await keys.get(principal.key_id)).spend == 0


async def test_a_model_without_a_price_is_refused_to_a_key_with_a_budget(keys):
    budgeted = await principal_for(keys, max_budget=1.0)
    with pytest.raises(PermissionDeniedError) as refused:
        await keys.limiter.admit(budgeted, lambda: None)  # None: no known price
    assert refused.value.status == 403 and refused.value.code == "model_price_unknown"
    assert await keys.limiter.admit(budgeted, lambda: 0.0) is not None  # a free model is fine
    rate_limited = await principal_for(keys, rpm_limit=10)  # no budget: nothing to count
    assert await keys.limiter.admit(rate_limited, lambda: None) is not None


async def test_master_and_unlimited_keys_skip_the_limiter(keys, documents):
    assert await keys.limiter.admit(MASTER, lambda: 1.0) is None
    assert await keys.limiter.admit(await principal_for(keys), lambda: 1.0) is None
    assert not any(d.get("object") == "key.limits" for d in documents.items["keys"].values())


def test_principals_see_their_own_and_their_teams_resources():
    alice = Principal("key_a", False, team_id="t1")
    bob = Principal("key_b", False, team_id="t1")
    carol = Principal("key_c", False)
    assert alice.can_see(**bob.stamp()) and bob.can_see(**alice.stamp())
    assert not carol.can_see(**alice.stamp()) and not alice.can_see(**carol.stamp())
    assert MASTER.can_see(**carol.stamp())
    with pytest.raises(PermissionDeniedError):
        alice.require_admin()


async def test_requests_of_one_worker_share_one_write_of_the_key_state(keys, documents):
    principal = await principal_for(keys, rpm_limit=15)
    writes = []
    replace = documents.replace

    async def counting_replace(*args, **kwargs):
        writes.append(1)
        return await replace(*args, **kwargs)

    documents.replace = counting_replace
    await keys.limiter.admit(principal, lambda: None)  # creates the state item
    results = await asyncio.gather(
        *(keys.limiter.admit(principal, lambda: None) for _ in range(20)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 14  # 15 per minute in all
    assert all(isinstance(r, RateLimitError) for r in results[14:])
    assert len(writes) == 1  # twenty admissions, one write
