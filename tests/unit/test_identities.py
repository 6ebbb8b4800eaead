"""Entra ID callers turned into principals: roles, the policy that covers them, the master key
switched off, and the audit records admin actions leave. In-memory stores, a fake token check
(the real one is tests/unit/test_entra.py and, over HTTP, the e2e tier)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from types import SimpleNamespace

import pytest
from pydantic import SecretStr

from shared.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
)
from shared.models.keys import KeyCreate, KeyUpdate
from shared.models.policies import PolicyCreate, PolicyUpdate
from shared.services.audit import AuditLog
from shared.services.auth import MASTER_OFF, AuthService
from shared.services.entra import EntraIdentity, IssuerUnavailable, TokenRejected
from shared.services.identities import NO_POLICY, NO_ROLE, EntraIdentities
from shared.services.keys import KeyService
from shared.services.limits import KeyLimiter
from shared.services.policies import CACHE_TTL_S, MAX_STALE_S, PolicyService
from tests.fakes import TEST_ACTOR, FakeClock, InMemoryDocumentStore

MASTER_KEY = "sk-master-" + "m" * 40
ALICE = "11111111-1111-1111-1111-111111111111"
BOB = "22222222-2222-2222-2222-222222222222"
DAEMON_APP = "33333333-3333-3333-3333-333333333333"
GROUP = "44444444-4444-4444-4444-444444444444"
OTHER_GROUP = "55555555-5555-5555-5555-555555555555"


def identity(oid: str, *roles: str, app: str | None = None, groups: tuple[str, ...] = ()) -> EntraIdentity:
    return EntraIdentity(
        issuer="https://login.microsoftonline.com/t/v2.0",
        tenant_id="t",
        object_id=oid,
        app_id=app,
        subject="sub-" + oid,
        roles=frozenset(roles),
        groups=frozenset(groups),
        name=f"{oid[:4]}@example.com",
        is_app=False,
        expires_at=2_000_000_000,
    )


class FakeVerifier:
    """Tokens are names of identities registered here; anything else is refused."""

    def __init__(self) -> None:
        self.tokens: dict[str, EntraIdentity | Exception] = {}

    async def verify(self, token: str) -> EntraIdentity:
        found = self.tokens.get(token, TokenRejected("bad signature"))
        if isinstance(found, Exception):
            raise found
        return found

    async def aclose(self) -> None:
        pass


class Tokens(dict):
    """`looks_like_jwt` is the real one, so the fake tokens are shaped like JWTs."""

    n = 0

    def issue(self, verifier: FakeVerifier, value: EntraIdentity | Exception) -> str:
        Tokens.n += 1
        payload = base64.urlsafe_b64encode(json.dumps({"n": Tokens.n}).encode()).decode().rstrip("=")
        token = f"eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln"
        verifier.tokens[token] = value
        return token


def build(*, master_enabled: bool = True) -> SimpleNamespace:
    documents = InMemoryDocumentStore()
    clock = FakeClock(1_800_000_000)
    limiter = KeyLimiter(documents, clock=clock)
    audit = AuditLog(documents, clock=clock)
    policies = PolicyService(documents, limiter, audit, clock=clock)
    verifier = FakeVerifier()
    identities = EntraIdentities(verifier, policies, documents, clock=clock)
    keys: KeyService | None = None

    async def lookup(key_id):
        return await keys.lookup(key_id)

    auth = AuthService(
        SecretStr(MASTER_KEY),
        SecretStr("h" * 40),
        lookup,
        master_enabled=master_enabled,
        identities=identities,
    )
    keys = KeyService(documents, auth, limiter, audit)
    tokens = Tokens()
    return SimpleNamespace(
        documents=documents,
        clock=clock,
        limiter=limiter,
        audit=audit,
        policies=policies,
        auth=auth,
        keys=keys,
        token=lambda value: tokens.issue(verifier, value),
    )


@pytest.fixture
def app() -> SimpleNamespace:
    return build()


def audit_records(app: SimpleNamespace) -> list[dict]:
    return list(app.documents.items["audit"].values())  # in the order they were written


async def test_the_admin_role_gives_an_admins_powers_under_the_callers_own_id(app):
    principal = await app.auth.authenticate(f"Bearer {app.token(identity(ALICE, 'Cirrus.Admin'))}")
    assert (principal.key_id, principal.kind, principal.is_master) == (f"entra_{ALICE}", "entra", True)
    assert principal.name == "1111@example.com" and principal.expires_at == 2_000_000_000
    principal.require_admin()  # no raise
    assert principal.may_use("any-model") and principal.can_see("key_someone_else")


async def test_a_user_gets_its_policys_models_limits_and_team(app):
    policy = await app.policies.create(
        PolicyCreate(object_ids=[ALICE], models=["m1"], rpm_limit=7, team_id="team-a"), TEST_ACTOR
    )
    principal = await app.auth.authenticate(f"Bearer {app.token(identity(ALICE, 'Cirrus.User'))}")
    assert (principal.key_id, principal.is_master, principal.team_id) == (f"entra_{ALICE}", False, "team-a")
    assert principal.models == frozenset({"m1"}) and principal.limits.rpm == 7
    assert principal.policy_id == policy.id == principal.limit_id
    with pytest.raises(PermissionDeniedError):
        principal.require_admin()


async def test_no_role_or_no_policy_is_a_403_that_says_what_is_missing(app):
    with pytest.raises(PermissionDeniedError) as no_role:
        await app.auth.authenticate(f"Bearer {app.token(identity(ALICE))}")
    assert no_role.value.message == NO_ROLE
    with pytest.raises(PermissionDeniedError) as no_policy:
        await app.auth.authenticate(f"Bearer {app.token(identity(ALICE, 'Cirrus.User'))}")
    assert no_policy.value.message == NO_POLICY


async def test_a_refused_token_is_the_same_401_as_a_wrong_key_and_its_reason_is_only_logged(app, caplog):
    caplog.set_level(logging.INFO, "cirrus.identities")
    token = app.token(TokenRejected("wrong audience"))
    with pytest.raises(AuthenticationError) as refused:
        await app.auth.authenticate(f"Bearer {token}")
    assert refused.value.message == "Incorrect API key provided."
    assert "wrong audience" in caplog.text and token not in caplog.text


async def test_an_unreachable_issuer_is_a_503_not_a_401(app):
    with pytest.raises(ServiceUnavailableError):
        await app.auth.authenticate(f"Bearer {app.token(IssuerUnavailable('timeout'))}")


async def test_the_most_specific_policy_wins_object_then_app_then_the_oldest_group(app):
    by_group = await app.policies.create(PolicyCreate(name="g", group_ids=[GROUP]), TEST_ACTOR)
    app.clock.now += 1
    await app.policies.create(PolicyCreate(name="g2", group_ids=[OTHER_GROUP]), TEST_ACTOR)
    by_app = await app.policies.create(PolicyCreate(name="app", app_ids=[DAEMON_APP]), TEST_ACTOR)
    by_object = await app.policies.create(PolicyCreate(name="obj", object_ids=[ALICE]), TEST_ACTOR)

    async def policy_of(who: EntraIdentity) -> str | None:
        return (await app.auth.authenticate(f"Bearer {app.token(who)}")).policy_id

    everything = identity(ALICE, "Cirrus.User", app=DAEMON_APP, groups=(OTHER_GROUP, GROUP))
    assert await policy_of(everything) == by_object.id
    assert await policy_of(identity(BOB, "Cirrus.User", app=DAEMON_APP, groups=(GROUP,))) == by_app.id
    assert await policy_of(identity(BOB, "Cirrus.User", groups=(OTHER_GROUP, GROUP))) == by_group.id


async def test_one_identity_is_named_by_one_policy_at_most(app):
    await app.policies.create(PolicyCreate(object_ids=[ALICE]), TEST_ACTOR)
    other = await app.policies.create(PolicyCreate(object_ids=[BOB]), TEST_ACTOR)
    with pytest.raises(ConflictError):
        await app.policies.create(PolicyCreate(object_ids=[ALICE.upper()]), TEST_ACTOR)
    with pytest.raises(ConflictError):
        await app.policies.update(other.id, PolicyUpdate(object_ids=[BOB, ALICE]), TEST_ACTOR)


async def test_a_policys_limits_are_shared_by_everyone_it_covers(app):
    await app.policies.create(PolicyCreate(group_ids=[GROUP], rpm_limit=2), TEST_ACTOR)
    alice = await app.auth.authenticate(
        f"Bearer {app.token(identity(ALICE, 'Cirrus.User', groups=(GROUP,)))}"
    )
    bob = await app.auth.authenticate(f"Bearer {app.token(identity(BOB, 'Cirrus.User', groups=(GROUP,)))}")
    assert alice.key_id != bob.key_id and alice.limit_id == bob.limit_id
    await app.limiter.admit(alice, lambda: None)
    await app.limiter.admit(bob, lambda: None)
    with pytest.raises(RateLimitError):
        await app.limiter.admit(alice, lambda: None)


async def test_principals_under_different_policies_do_not_see_each_others_records(app):
    await app.policies.create(PolicyCreate(object_ids=[ALICE], team_id="team-a"), TEST_ACTOR)
    await app.policies.create(PolicyCreate(object_ids=[BOB], team_id="team-b"), TEST_ACTOR)
    alice = await app.auth.authenticate(f"Bearer {app.token(identity(ALICE, 'Cirrus.User'))}")
    bob = await app.auth.authenticate(f"Bearer {app.token(identity(BOB, 'Cirrus.User'))}")
    assert alice.can_see(**alice.stamp()) and not bob.can_see(**alice.stamp())
    assert alice.scope()[1] == {"@scope_owner": f"entra_{ALICE}", "@scope_team": "team-a"}


async def test_queued_work_runs_as_the_identity_until_its_policy_is_deleted(app):
    policy = await app.policies.create(PolicyCreate(object_ids=[ALICE], rpm_limit=9), TEST_ACTOR)
    first = await app.auth.authenticate(f"Bearer {app.token(identity(ALICE, 'Cirrus.User'))}")
    later = await app.auth.principal_for(first.key_id)
    assert (later.key_id, later.limits.rpm, later.policy_id) == (first.key_id, 9, policy.id)
    await app.policies.delete(policy.id, TEST_ACTOR)
    with pytest.raises(AuthenticationError):
        await app.auth.principal_for(first.key_id)
    with pytest.raises(AuthenticationError):
        await app.auth.principal_for(f"entra_{BOB}")  # never seen


async def test_the_master_key_switched_off_is_refused_and_so_is_work_queued_under_it():
    app = build(master_enabled=False)
    with pytest.raises(AuthenticationError) as refused:
        await app.auth.authenticate(f"Bearer {MASTER_KEY}")
    assert refused.value.message == MASTER_OFF
    with pytest.raises(AuthenticationError):
        await app.auth.principal_for("master")
    admin = await app.auth.authenticate(f"Bearer {app.token(identity(ALICE, 'Cirrus.Admin'))}")
    assert admin.is_master


async def test_every_key_change_is_audited_with_limits_before_and_after_and_no_secret(app):
    created = await app.keys.create(KeyCreate(key_alias="app", rpm_limit=5), TEST_ACTOR)
    await app.keys.update(created.id, KeyUpdate(rpm_limit=10), TEST_ACTOR)
    rotated = await app.keys.rotate(created.id, TEST_ACTOR)
    await app.keys.revoke(created.id, TEST_ACTOR)
    await app.keys.revoke(created.id, TEST_ACTOR)  # twice: one record
    records = audit_records(app)
    assert [r["action"] for r in records] == ["key.create", "key.update", "key.rotate", "key.revoke"]
    update = records[1]
    assert (update["before"]["rpm_limit"], update["after"]["rpm_limit"]) == (5, 10)
    assert update["actor"] == {"id": "master", "kind": "master", "name": None}
    assert update["target"] == {"type": "key", "id": created.id} and update["pk"] == created.id
    assert (update["request_id"], update["client_ip"]) == ("req_test", "127.0.0.1")
    text = str(records)
    for secret in (created.key, rotated.key, created.key_name.removesuffix("...")):
        assert secret not in text
    assert "key_hash" not in text


async def test_policy_changes_are_audited_and_a_deleted_policy_is_kept_but_stops_matching(app):
    policy = await app.policies.create(PolicyCreate(name="p", object_ids=[ALICE]), TEST_ACTOR)
    await app.policies.update(policy.id, PolicyUpdate(tpm_limit=1000), TEST_ACTOR)
    deleted = await app.policies.delete(policy.id, TEST_ACTOR)
    await app.policies.delete(policy.id, TEST_ACTOR)
    assert deleted.status == "deleted" and (await app.policies.get(policy.id)).status == "deleted"
    assert [r["action"] for r in audit_records(app)] == ["policy.create", "policy.update", "policy.delete"]
    assert audit_records(app)[1]["after"]["tpm_limit"] == 1000
    with pytest.raises(NotFoundError):
        await app.policies.update(policy.id, PolicyUpdate(rpm_limit=1), TEST_ACTOR)
    with pytest.raises(PermissionDeniedError):
        await app.auth.authenticate(f"Bearer {app.token(identity(ALICE, 'Cirrus.User'))}")


async def test_an_audit_record_is_also_a_telemetry_event(app, caplog):
    caplog.set_level(logging.INFO, "cirrus.audit")
    await app.keys.create(KeyCreate(), TEST_ACTOR)
    (record,) = [r for r in caplog.records if r.name == "cirrus.audit"]
    assert record.__dict__["microsoft.custom_event.name"] == "CirrusAudit"
    assert record.__dict__["cirrus.audit.action"] == "key.create"


async def test_a_failed_audit_write_is_logged_and_does_not_undo_the_change(app, caplog):
    async def broken(container, doc):
        raise ConnectionError("cosmos down")

    app.documents.create, real_create = broken, app.documents.create
    created_doc = await real_create("keys", {"id": "x", "pk": "x"})  # the store itself still works
    assert created_doc["id"] == "x"
    event = await app.audit.record(TEST_ACTOR, "key.revoke", ("key", "key_1"))
    assert event.action == "key.revoke" and "could not be written" in caplog.text


# --- the policies each instance holds ---------------------------------------------------------------


async def test_a_change_made_elsewhere_is_seen_after_the_cache_time_without_a_request_waiting(app):
    elsewhere = PolicyService(app.documents, app.limiter, app.audit, clock=app.clock)
    await app.policies.covering(ALICE, None, ())  # this instance has read the policies
    created = await elsewhere.create(PolicyCreate(object_ids=[ALICE]), TEST_ACTOR)
    assert await app.policies.covering(ALICE, None, ()) is None  # not yet: within the cache time
    app.clock.now += CACHE_TTL_S
    assert await app.policies.covering(ALICE, None, ()) is None  # stale, answered at once...
    await asyncio.sleep(0)  # ...while one read runs in the background
    assert (await app.policies.covering(ALICE, None, ())).id == created.id


async def test_a_change_made_here_holds_at_once_even_over_a_read_under_way(app):
    await app.policies.covering(ALICE, None, ())
    app.clock.now += CACHE_TTL_S
    await app.policies.covering(ALICE, None, ())  # a background read starts, from before the change
    created = await app.policies.create(PolicyCreate(object_ids=[ALICE]), TEST_ACTOR)
    await asyncio.sleep(0)
    assert (await app.policies.covering(ALICE, None, ())).id == created.id


async def test_with_cosmos_down_the_last_policies_serve_for_a_minute_then_503(app):
    created = await app.policies.create(PolicyCreate(object_ids=[ALICE]), TEST_ACTOR)
    assert (await app.policies.covering(ALICE, None, ())).id == created.id

    async def down(*_args, **_kwargs):
        raise ConnectionError("cosmos down")

    app.documents.query = down
    app.clock.now += MAX_STALE_S - 1
    assert (await app.policies.covering(ALICE, None, ())).id == created.id
    await asyncio.sleep(0)
    app.clock.now += 1
    with pytest.raises(ServiceUnavailableError):
        await app.policies.covering(ALICE, None, ())
