"""Entra token verification against the local issuer (tools/oidc_issuer.py) over real HTTP: the
default fetcher's discovery, key refresh and fetch limits, its URL rules, and the issuer's own
command line as `make dev` and the README run it."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from shared.services.entra import (
    EntraIdentity,
    EntraVerifier,
    HttpJsonFetcher,
    IssuerUnavailable,
    TokenRejected,
)
from tests.fakes import FakeClock
from tools.oidc_issuer import DEV_APP_OID, DEV_USER_OID, LOCAL_AUDIENCE, LocalIssuer, SigningKey, issuer_url
from tools.stack import LOOPBACK, ROOT, free_port, local_issuer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def issuer(clock) -> Iterator[LocalIssuer]:
    with LocalIssuer.start(clock=clock) as running:
        yield running


@pytest.fixture
async def verifier(issuer, clock):
    verifier = EntraVerifier([issuer.issuer_url], [LOCAL_AUDIENCE], clock=clock)
    yield verifier
    await verifier.aclose()


async def test_the_default_fetcher_discovers_the_keys_and_verifies_tokens(issuer, verifier):
    user = await verifier.verify(issuer.mint(roles=["Cirrus.User"], groups=["g-1"]))
    app = await verifier.verify(issuer.mint(app=True, roles=["Cirrus.Admin"]))
    assert (user.object_id, user.is_app, user.roles, user.groups) == (
        DEV_USER_OID,
        False,
        {"Cirrus.User"},
        {"g-1"},
    )
    assert (app.object_id, app.is_app, app.roles) == (DEV_APP_OID, True, {"Cirrus.Admin"})
    assert (issuer.discovery_requests, issuer.jwks_requests) == (1, 1)


async def test_a_rotated_key_is_fetched_once_the_minute_has_passed(issuer, verifier, clock):
    await verifier.verify(issuer.mint())
    issuer.rotate(keep_old=False)
    with pytest.raises(TokenRejected, match="unknown signing key"):
        await verifier.verify(issuer.mint())  # within a minute of the last fetch: not fetched again
    assert issuer.jwks_requests == 1
    clock.now += 61
    assert await verifier.verify(issuer.mint())
    assert issuer.jwks_requests == 2


async def test_a_burst_fetches_the_keys_once(issuer, verifier):
    tokens = [issuer.mint(oid=str(uuid.uuid4())) for _ in range(40)]
    identities = await asyncio.gather(*(verifier.verify(t) for t in tokens))
    assert len({i.object_id for i in identities}) == 40
    forged = [
        issuer.mint(key=SigningKey(uuid.uuid4().hex, issuer.minter.current.private_key)) for _ in range(40)
    ]
    results = await asyncio.gather(*(verifier.verify(t) for t in forged), return_exceptions=True)
    assert all(isinstance(r, TokenRejected) and r.reason == "unknown signing key" for r in results)
    assert (issuer.discovery_requests, issuer.jwks_requests) == (1, 1)


async def test_a_jwks_uri_that_is_not_https_is_refused(issuer, verifier):
    issuer.discovery_overrides = {"jwks_uri": f"http://login.example.test/{uuid.uuid4()}/keys"}
    with pytest.raises(IssuerUnavailable):
        await verifier.verify(issuer.mint())
    assert issuer.jwks_requests == 0


async def test_the_default_fetcher_refuses_plain_http_beyond_loopback():
    fetch = HttpJsonFetcher()
    for url in ("http://login.example.test/t/v2.0/.well-known/openid-configuration", "file:///etc/passwd"):
        with pytest.raises(IssuerUnavailable, match="not https"):
            await fetch(url)
    with pytest.raises(ValueError, match="not https"):
        EntraVerifier(["http://login.example.test/t/v2.0"], [LOCAL_AUDIENCE])
    await fetch.aclose()


async def test_a_discovery_document_of_another_issuer_is_refused(issuer, verifier):
    issuer.discovery_overrides = {"issuer": issuer_url(issuer.port, str(uuid.uuid4()))}
    with pytest.raises(IssuerUnavailable):
        await verifier.verify(issuer.mint())
    assert issuer.jwks_requests == 0


async def test_an_issuer_that_answers_404_or_nothing_is_unavailable(issuer, clock):
    for url in (issuer_url(issuer.port, str(uuid.uuid4())), issuer_url(free_port())):
        verifier = EntraVerifier([url], [LOCAL_AUDIENCE], clock=clock)
        token = issuer.minter.mint(iss=url)
        with pytest.raises(IssuerUnavailable):
            await verifier.verify(token)
        await verifier.aclose()


async def test_a_document_over_the_size_cap_is_refused(issuer):
    fetch = HttpJsonFetcher(max_bytes=100)
    with pytest.raises(IssuerUnavailable, match="too large"):
        await fetch(issuer.jwks_uri)
    assert (await HttpJsonFetcher()(issuer.jwks_uri))["keys"]


# --- the command line, as `make dev` and the README run it ---------------------------------------


def run_cli(state: Path, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.oidc_issuer", command, "--state", str(state), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def token_cli(state: Path, *args: str) -> str:
    minted = run_cli(state, "token", *args)
    assert minted.returncode == 0, minted.stderr
    return minted.stdout.strip()


def verify(issuer: str, token: str) -> EntraIdentity:
    """`token` verified by a verifier of its own, with the default fetcher (one fetch each time)."""

    async def once() -> EntraIdentity:
        verifier = EntraVerifier([issuer], [LOCAL_AUDIENCE])
        try:
            return await verifier.verify(token)
        finally:
            await verifier.aclose()

    return asyncio.run(once())


def test_serve_and_token_processes_keep_their_keys_across_restarts(tmp_path):
    state = tmp_path / "state"
    missing = run_cli(state, "token")
    assert missing.returncode == 2 and "serve" in missing.stderr

    port = free_port()
    url = issuer_url(port)
    serve = local_issuer(port, state, tmp_path / "issuer.log").start()
    try:
        serve.wait_ready()
        assert stat.S_IMODE(os.stat(state / "keys.json").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
        token = token_cli(state, "--role", "Cirrus.User", "--group", "g-1", "--ttl", "600")
        identity = verify(url, token)
        assert identity.roles == {"Cirrus.User"} and identity.groups == {"g-1"} and not identity.is_app
        app = verify(url, token_cli(state, "--app", "--oid", DEV_USER_OID))
        assert app.is_app and app.object_id == DEV_USER_OID

        rotated = run_cli(state, "rotate")
        assert rotated.returncode == 0, rotated.stderr
        after_rotation = token_cli(state)
        assert jwt.get_unverified_header(after_rotation)["kid"] == rotated.stdout.strip()
        assert verify(url, after_rotation)  # the running issuer publishes the new key
    finally:
        serve.stop()

    restarted = local_issuer(port, state, tmp_path / "issuer.log").start()
    try:
        restarted.wait_ready()
        assert verify(url, token)  # minted before the restart, with the first key
        assert verify(url, after_rotation)
    finally:
        restarted.stop()
    assert f"{LOOPBACK}:{port}" in (state / "issuer.json").read_text()
