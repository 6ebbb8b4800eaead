"""Console sign-in: signed cookies, expiry, sign-out, the key re-checked, and the CSRF header rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from azurefunctions.extensions.http.fastapi import Request
from pydantic import SecretStr

from shared.blueprints._http import authenticate
from shared.errors import AuthenticationError
from shared.models.keys import KeyCreate
from shared.services.audit import AuditLog
from shared.services.auth import MASTER, AuthService
from shared.services.console_sessions import COOKIE_NAME, SESSION_TTL_S, ConsoleSessions, signing_key
from shared.services.keys import KeyService
from shared.services.limits import KeyLimiter
from tests.fakes import TEST_ACTOR, FakeClock, InMemoryDocumentStore

MASTER_KEY = "sk-master-" + "m" * 40
HASH_SECRET = "h" * 40


@pytest.fixture
def clock():
    return FakeClock(1_800_000_000)


@pytest.fixture
def documents():
    return InMemoryDocumentStore()


def build(documents, clock, master_key: str = MASTER_KEY):
    keys: KeyService | None = None

    async def lookup(key_id):
        return await keys.lookup(key_id)

    auth = AuthService(SecretStr(master_key), SecretStr(HASH_SECRET), lookup)
    keys = KeyService(documents, auth, KeyLimiter(documents, clock=clock), AuditLog(documents))
    sessions = ConsoleSessions(documents, auth, signing_key(HASH_SECRET.encode()), clock=clock)
    return SimpleNamespace(auth=auth, keys=keys, console=sessions)


@pytest.fixture
def app(documents, clock):
    return build(documents, clock)


async def test_the_master_key_signs_in_and_the_cookie_names_a_session_not_the_key(app, documents, clock):
    cookie, session = await app.console.sign_in(MASTER_KEY)
    assert MASTER_KEY not in cookie and MASTER_KEY not in str(documents.items)
    assert session.public() == {
        "key_id": None,
        "name": None,
        "is_master": True,
        "kind": "master",
        "expires_at": int(clock.now) + SESSION_TTL_S,
    }
    resolved, principal = await app.console.resolve(cookie)
    assert principal is MASTER and resolved == session


async def test_a_virtual_key_signs_in_as_itself_and_ends_with_its_key(app, documents):
    created = await app.keys.create(KeyCreate(key_alias="console-app", team_id=None), TEST_ACTOR)
    cookie, session = await app.console.sign_in(created.key)
    assert (session.key_id, session.name, session.is_master) == (created.id, "console-app", False)
    assert created.key not in cookie and created.key not in str(documents.items)
    _, principal = await app.console.resolve(cookie)
    assert principal.key_id == created.id and not principal.is_master
    await app.keys.revoke(created.id, TEST_ACTOR)  # re-checked on every request
    with pytest.raises(AuthenticationError, match="revoked"):
        await app.console.resolve(cookie)


@pytest.mark.parametrize("key", ["", "nope", "sk-cirrus-" + "0" * 16 + "a" * 40, MASTER_KEY + "x"])
async def test_a_key_cirrus_does_not_accept_gets_no_session(app, documents, key):
    with pytest.raises(AuthenticationError):
        await app.console.sign_in(key)
    assert not documents.items["keys"]


async def test_an_altered_or_forged_cookie_is_refused(app):
    cookie, _ = await app.console.sign_in(MASTER_KEY)
    session_id, expiry, signature = cookie.split(".")
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    for bad in (
        f"{session_id}.{expiry}.{flipped}",
        f"{session_id}.{int(expiry) + 3600}.{signature}",  # a longer life, same signature
        f"csess_{'0' * 32}.{expiry}.{signature}",  # another session, same signature
        f"{session_id}.{expiry}",
        "",
        None,
        "a.b.c.d",
    ):
        with pytest.raises(AuthenticationError):
            await app.console.resolve(bad)
    elsewhere = ConsoleSessions(InMemoryDocumentStore(), app.auth, signing_key(b"another server's secret"))
    with pytest.raises(AuthenticationError):
        elsewhere.verify(cookie)


async def test_a_session_expires_after_its_ttl(app, clock):
    cookie, _ = await app.console.sign_in(MASTER_KEY)
    clock.now += SESSION_TTL_S - 1
    await app.console.resolve(cookie)
    clock.now += 1
    with pytest.raises(AuthenticationError, match="ended"):
        await app.console.resolve(cookie)


async def test_sign_out_revokes_the_session_for_a_replayed_cookie(app):
    cookie, _ = await app.console.sign_in(MASTER_KEY)
    second, _ = await app.console.sign_in(MASTER_KEY)
    await app.console.sign_out(cookie)
    with pytest.raises(AuthenticationError, match="ended"):
        await app.console.resolve(cookie)
    await app.console.resolve(second)  # other sessions go on
    await app.console.sign_out(cookie)  # twice is fine
    await app.console.sign_out("garbage")  # and so is nonsense


async def test_a_new_master_key_ends_the_old_ones_sessions(documents, clock):
    cookie, _ = await build(documents, clock).console.sign_in(MASTER_KEY)
    rotated = build(documents, clock, master_key="sk-master-" + "n" * 40)
    with pytest.raises(AuthenticationError):
        await rotated.console.resolve(cookie)


def request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request(
        {"type": "http", "method": "GET", "path": "/v1/usage", "headers": raw, "query_string": b""}
    )


async def test_the_cookie_authenticates_only_with_the_console_header(app):
    cookie, _ = await app.console.sign_in(MASTER_KEY)
    jar = f"{COOKIE_NAME}={cookie}"
    assert await authenticate(request({"cookie": jar, "x-cirrus-console": "1"}), app) is MASTER
    for headers in (
        {"cookie": jar},  # a cross-site request could carry the cookie, never this header
        {"cookie": jar, "x-cirrus-console": "true"},
        {"x-cirrus-console": "1"},
    ):
        with pytest.raises(AuthenticationError, match="didn't provide an API key"):
            await authenticate(request(headers), app)
    # A key in a header decides when one is sent: a bad one is not rescued by the cookie.
    with pytest.raises(AuthenticationError, match="Incorrect"):
        await authenticate(
            request({"cookie": jar, "x-cirrus-console": "1", "authorization": "Bearer x"}), app
        )
