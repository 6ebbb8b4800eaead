"""Entra ID token verification (shared/services/entra.py) on an in-memory issuer and a fake clock."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.services.entra import (
    MAX_TOKEN_CHARS,
    VERIFIED_CACHE_S,
    EntraIdentity,
    EntraVerifier,
    IssuerUnavailable,
    TokenRejected,
    looks_like_jwt,
)
from tests.fakes import FakeClock, FakeOidcDocuments
from tools.oidc_issuer import LOCAL_CLIENT_ID, Minter, SigningKey

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ISSUER = f"https://login.example.test/{TENANT}/v2.0"
AUDIENCE = "api://cirrus-test"
OID = "5f4b1c8e-2d3a-4e6f-9a1b-0c2d3e4f5a6b"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def keys() -> list[SigningKey]:
    """RSA keys made once for the module: generating one takes tens of milliseconds."""
    return [SigningKey.generate() for _ in range(3)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def minter(keys, clock) -> Minter:
    return Minter(ISSUER, [keys[0]], AUDIENCE, clock, TENANT)


@pytest.fixture
def docs(minter) -> FakeOidcDocuments:
    return FakeOidcDocuments(minter)


@pytest.fixture
def verifier(docs, clock) -> EntraVerifier:
    return EntraVerifier([ISSUER], [AUDIENCE], fetch_json=docs, clock=clock)


async def rejected(verifier: EntraVerifier, token: str) -> str:
    with pytest.raises(TokenRejected) as caught:
        await verifier.verify(token)
    return caught.value.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: object) -> str:
    return b64(json.dumps(value).encode())


def crafted(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{b64json(header)}.{b64json(claims)}.{b64(signature)}"


# --- accepted tokens ------------------------------------------------------------------------------


async def test_a_user_token_names_the_user(verifier, minter, docs):
    token = minter.mint(roles=["Cirrus.User"], groups=["g-1", "g-2"], oid=OID, name="ada@contoso.test")
    identity = await verifier.verify(token)
    assert identity == EntraIdentity(
        issuer=ISSUER,
        tenant_id=TENANT,
        object_id=OID,
        app_id=LOCAL_CLIENT_ID,
        subject=jwt.decode(token, options={"verify_signature": False})["sub"],
        roles=frozenset({"Cirrus.User"}),
        groups=frozenset({"g-1", "g-2"}),
        name="ada@contoso.test",
        is_app=False,
        expires_at=NOW + 3600,
    )
    assert docs.fetched == [f"{ISSUER}/.well-known/openid-configuration", docs.jwks_uri]


async def test_an_application_token_is_an_app(verifier, minter):
    identity = await verifier.verify(minter.mint(app=True, roles=["Cirrus.Admin"], oid=OID))
    assert identity.is_app and identity.name is None and identity.subject == OID
    assert identity.roles == {"Cirrus.Admin"} and identity.groups == frozenset()


async def test_a_v1_style_token_without_idtyp_or_scp_is_an_app_and_names_its_appid(verifier, minter):
    token = minter.mint(app=True, oid=OID, idtyp=None, azp=None, appid="a1b2c3d4-0000-4000-8000-000000000000")
    identity = await verifier.verify(token)
    assert identity.is_app and identity.app_id == "a1b2c3d4-0000-4000-8000-000000000000"


async def test_a_user_token_without_preferred_username_shows_its_name(verifier, minter):
    identity = await verifier.verify(minter.mint(preferred_username=None, name="Ada Lovelace"))
    assert identity.name == "Ada Lovelace" and not identity.is_app  # scp still says "user"


async def test_any_configured_audience_and_issuer_is_accepted(keys, clock):
    other = Minter(f"https://login.example.test/{uuid.uuid4()}/v2.0", [keys[1]], "api://second", clock)
    docs = {m.issuer: FakeOidcDocuments(m) for m in (other, Minter(ISSUER, [keys[0]], AUDIENCE, clock))}

    async def fetch(url: str) -> dict:
        return await next(d for issuer, d in docs.items() if url.startswith(issuer.removesuffix("/v2.0")))(
            url
        )

    verifier = EntraVerifier(
        [ISSUER, other.issuer], [AUDIENCE, "api://second"], fetch_json=fetch, clock=clock
    )
    assert (await verifier.verify(other.mint())).issuer == other.issuer
    assert (await verifier.verify(other.mint(audience=AUDIENCE))).issuer == other.issuer


# --- time ---------------------------------------------------------------------------------------


async def test_an_expired_token_is_rejected_after_the_leeway(verifier, minter, clock):
    token = minter.mint(ttl_s=600)
    clock.now = NOW + 600 + 59  # within the 60 s leeway
    assert (await verifier.verify(token)).expires_at == NOW + 600
    clock.now = NOW + 600 + 61
    assert await rejected(verifier, token) == "expired"


async def test_a_token_not_yet_valid_is_rejected_beyond_the_leeway(verifier, minter):
    assert await rejected(verifier, minter.mint(nbf=int(NOW) + 120)) == "not yet valid"
    assert await verifier.verify(minter.mint(nbf=int(NOW) + 30))


# --- claims -------------------------------------------------------------------------------------


async def test_a_token_for_another_audience_is_rejected(verifier, minter):
    assert await rejected(verifier, minter.mint(audience="api://someone-else")) == "wrong audience"
    assert await rejected(verifier, minter.mint(aud=["api://a", "api://b"])) == "wrong audience"


async def test_a_token_of_an_issuer_not_configured_is_rejected_without_any_fetch(verifier, docs, keys, clock):
    # An attacker's issuer at an internal address: `iss` must never steer a fetch.
    evil = Minter("http://169.254.169.254/metadata/v2.0", [keys[0]], AUDIENCE, clock)
    assert await rejected(verifier, evil.mint()) == "wrong issuer"
    assert await rejected(verifier, Minter(ISSUER + "/", [keys[0]], AUDIENCE, clock).mint()) == "wrong issuer"
    assert (
        await rejected(verifier, crafted({"alg": "RS256", "kid": keys[0].kid}, {"iss": 7})) == "wrong issuer"
    )
    assert docs.fetched == []


@pytest.mark.parametrize(
    ("claim", "value", "reason"),
    [
        ("oid", "-", "no object id"),
        ("oid", "not-a-guid", "no object id"),
        ("oid", 42, "no object id"),
        ("exp", "-", "missing claim: exp"),
        ("aud", "-", "missing claim: aud"),
        ("sub", "-", "missing claim: sub"),
        ("exp", "tomorrow", "malformed"),
        ("roles", "Cirrus.Admin", "malformed"),
        ("groups", [1, 2], "malformed"),
    ],
)
async def test_a_token_missing_or_garbling_a_required_claim_is_rejected(
    verifier, minter, claim, value, reason
):
    claims = minter.claims()
    if value == "-":
        del claims[claim]
    else:
        claims[claim] = value
    token = jwt.encode(
        claims, minter.current.private_key, algorithm="RS256", headers={"kid": minter.current.kid}
    )
    assert await rejected(verifier, token) == reason


# --- algorithms and keys ------------------------------------------------------------------------


async def test_a_token_signed_by_another_key_under_a_published_kid_is_rejected(verifier, minter, keys):
    impostor = SigningKey(keys[0].kid, keys[1].private_key)
    assert await rejected(verifier, minter.mint(key=impostor)) == "bad signature"


async def test_a_token_with_a_tampered_claim_is_rejected(verifier, minter):
    header, _claims, signature = minter.mint(roles=["Cirrus.User"]).split(".")
    claims = minter.claims(roles=["Cirrus.Admin"])
    assert await rejected(verifier, f"{header}.{b64json(claims)}.{signature}") == "bad signature"


async def test_alg_none_is_rejected_before_any_key_is_fetched(verifier, minter, docs):
    token = crafted({"alg": "none", "kid": minter.current.kid, "typ": "JWT"}, minter.claims())
    assert await rejected(verifier, token) == "algorithm not allowed: none"
    assert await rejected(verifier, token + "c2ln") == "algorithm not allowed: none"
    assert docs.fetched == []


@pytest.mark.parametrize("secret_form", ["pem", "jwk"])
async def test_hs256_keyed_with_the_public_key_is_rejected_before_any_key_is_fetched(
    verifier, minter, docs, secret_form
):
    # The classic confusion: a verifier that lets the token pick the algorithm checks an HMAC
    # keyed with the RSA public key, which anyone can download. PyJWT refuses to make one, so
    # the token is signed here by hand.
    public = minter.current.private_key.public_key()
    if secret_form == "pem":
        secret = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        secret = json.dumps(minter.current.public_jwk()).encode()
    signing_input = f"{b64json({'alg': 'HS256', 'kid': minter.current.kid})}.{b64json(minter.claims())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    assert await rejected(verifier, f"{signing_input}.{b64(signature)}") == "algorithm not allowed: HS256"
    assert docs.fetched == []


async def test_other_algorithms_are_rejected(verifier, minter, docs):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    es256 = jwt.encode(minter.claims(), ec_key, algorithm="ES256", headers={"kid": minter.current.kid})
    assert await rejected(verifier, es256) == "algorithm not allowed: ES256"
    ps256 = jwt.encode(minter.claims(), minter.current.private_key, algorithm="PS256", headers={"kid": "k"})
    assert await rejected(verifier, ps256) == "algorithm not allowed: PS256"
    # An algorithm name is only echoed when it is a plain short token: the reason goes to logs.
    odd = crafted({"alg": "RS256\nforged log line", "kid": "k"}, minter.claims())
    assert await rejected(verifier, odd) == "algorithm not allowed: ?"
    assert docs.fetched == []


async def test_a_token_without_a_kid_is_rejected(verifier, minter, docs):
    token = jwt.encode(minter.claims(), minter.current.private_key, algorithm="RS256")
    assert await rejected(verifier, token) == "no key id"
    assert docs.fetched == []


async def test_an_unknown_kid_refreshes_the_keys_once_a_minute_at_most(verifier, minter, docs, clock, keys):
    await verifier.verify(minter.mint())
    assert docs.jwks_fetches == 1
    clock.now += 61
    minter.keys.append(keys[1])  # the issuer rolls over to a new key
    assert (await verifier.verify(minter.mint())).object_id
    assert docs.jwks_fetches == 2

    clock.now += 10
    minter.keys.append(keys[2])  # another new key, too soon after the last fetch
    assert await rejected(verifier, minter.mint()) == "unknown signing key"
    assert docs.jwks_fetches == 2
    assert await verifier.verify(minter.mint(key=keys[0]))  # known keys still work meanwhile

    clock.now += 51  # 61 s since the last fetch
    assert await verifier.verify(minter.mint())
    assert docs.jwks_fetches == 3


async def test_a_burst_of_tokens_with_a_new_kid_shares_one_fetch(verifier, minter, docs, clock, keys):
    await verifier.verify(minter.mint())
    clock.now += 61
    minter.keys.append(keys[1])
    docs.gate = asyncio.Event()
    burst = [asyncio.create_task(verifier.verify(minter.mint())) for _ in range(25)]
    await asyncio.sleep(0)
    docs.gate.set()
    identities = await asyncio.gather(*burst)
    assert len(identities) == 25
    assert docs.jwks_fetches == 2


async def test_a_cold_cache_fetches_once_for_concurrent_requests(verifier, minter, docs):
    docs.gate = asyncio.Event()
    burst = [asyncio.create_task(verifier.verify(minter.mint())) for _ in range(10)]
    await asyncio.sleep(0)
    docs.gate.set()
    await asyncio.gather(*burst)
    assert docs.jwks_fetches == 1


async def test_a_burst_of_random_kids_costs_at_most_one_fetch_a_minute(verifier, minter, docs, clock):
    await verifier.verify(minter.mint())
    clock.now += 61
    for _ in range(3):  # three bursts of made-up kids, each within a minute of the first
        forged = [
            minter.mint(key=SigningKey(uuid.uuid4().hex, minter.current.private_key)) for _ in range(20)
        ]
        results = await asyncio.gather(*(verifier.verify(t) for t in forged), return_exceptions=True)
        assert {r.reason for r in results if isinstance(r, TokenRejected)} == {"unknown signing key"}
        assert len(results) == 20 and all(isinstance(r, TokenRejected) for r in results)
        clock.now += 15
    assert docs.jwks_fetches == 2


async def test_a_caller_that_gives_up_does_not_cancel_the_shared_fetch(verifier, minter, docs):
    docs.gate = asyncio.Event()
    impatient = asyncio.create_task(verifier.verify(minter.mint()))
    patient = asyncio.create_task(verifier.verify(minter.mint()))
    await asyncio.sleep(0)
    impatient.cancel()
    docs.gate.set()
    assert (await patient).object_id
    assert docs.jwks_fetches == 1


async def test_keys_are_fetched_again_after_a_day(verifier, minter, docs, clock):
    await verifier.verify(minter.mint())
    clock.now += 24 * 3600 + 1
    await verifier.verify(minter.mint(ttl_s=60))
    assert docs.jwks_fetches == 2


@pytest.mark.filterwarnings("ignore:The RSA key is 1024 bits long")
async def test_a_key_under_2048_bits_is_never_used(verifier, minter, docs, keys):
    weak = SigningKey.generate(bits=1024)
    minter.keys.append(weak)
    assert await rejected(verifier, minter.mint()) == "unknown signing key"
    assert await verifier.verify(minter.mint(key=keys[0]))  # the issuer's other keys still work


async def test_only_rsa_signing_keys_are_read_from_the_jwks(verifier, minter, docs, keys):
    good = keys[1].public_jwk()
    docs.extra_jwks = [
        {**good, "kid": "enc", "use": "enc"},
        {**good, "kid": "rs512", "alg": "RS512"},
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "RSA", "kid": "garbage", "n": "!!!", "e": "AQAB"},
        {**good, "kid": "private", "d": "AQAB"},  # only public parameters are read
        "not a key",
    ]
    for kid in ("enc", "rs512", "ec", "garbage"):
        token = minter.mint(key=SigningKey(kid, keys[1].private_key))
        assert await rejected(verifier, token) == "unknown signing key"
    assert await verifier.verify(minter.mint(key=SigningKey("private", keys[1].private_key)))
    assert await verifier.verify(minter.mint())


# --- the issuer's side --------------------------------------------------------------------------


async def test_a_discovery_document_naming_another_issuer_makes_the_issuer_unavailable(
    verifier, minter, docs
):
    docs.discovery_overrides = {"issuer": "https://login.example.test/common/v2.0"}
    with pytest.raises(IssuerUnavailable):
        await verifier.verify(minter.mint())
    assert docs.jwks_fetches == 0


@pytest.mark.parametrize(
    "document", [{"jwks_uri": None}, {"jwks_uri": ""}], ids=["null-jwks-uri", "empty-jwks-uri"]
)
async def test_a_discovery_document_without_keys_makes_the_issuer_unavailable(
    verifier, minter, docs, document
):
    docs.discovery_overrides = document
    with pytest.raises(IssuerUnavailable):
        await verifier.verify(minter.mint())


async def test_a_failed_fetch_is_an_outage_and_is_not_retried_within_a_minute(verifier, minter, docs, clock):
    docs.fail = IssuerUnavailable("connection refused")
    with pytest.raises(IssuerUnavailable):
        await verifier.verify(minter.mint())
    clock.now += 30
    with pytest.raises(IssuerUnavailable):
        await verifier.verify(minter.mint())
    assert len(docs.fetched) == 1
    docs.fail = None
    clock.now += 31
    assert await verifier.verify(minter.mint())


async def test_a_fetch_that_raises_something_else_is_an_outage_too(verifier, minter, docs):
    docs.fail = RuntimeError("a bug in someone's fetch_json")
    with pytest.raises(IssuerUnavailable):
        await verifier.verify(minter.mint())


async def test_cached_keys_stay_in_use_while_the_issuer_is_down(verifier, minter, docs, clock, keys):
    await verifier.verify(minter.mint())
    clock.now += 24 * 3600 + 1
    docs.fail = IssuerUnavailable("connection refused")
    assert await verifier.verify(minter.mint(ttl_s=60))  # stale keys beat refusing everyone
    minter.keys.append(keys[1])
    clock.now += 61
    with pytest.raises(IssuerUnavailable):  # a key it has not seen: cannot tell, so an outage
        await verifier.verify(minter.mint(ttl_s=60))


# --- malformed input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "sk-cirrus-0123456789abcdef" + "x" * 40,
        "a.b",
        "a.b.c.d",
        "!!!.@@@.###",
        "eyJ.eyJ.sig",
        f"{b64json(['alg', 'RS256'])}.{b64json({})}.c2ln",
        f"{b64json({'alg': 'RS256', 'kid': 'k'})}.{b64json([1, 2])}.c2ln",
        f"{b64json({'alg': 'RS256', 'kid': 'k'})}.{b64(b'\xff\xfe{}')}.c2ln",
        f"{b64(b'[' * 5000)}.{b64json({})}.c2ln",
        f"{b64json({'alg': 'RS256'})}.{b64json({'pad': 'x' * MAX_TOKEN_CHARS})}.c2ln",
        "\udc80.\udc80.\udc80",
        "é.é.é",
        f"{b64json({'alg': 'RS256', 'kid': 'k'})}=.{b64json({})}.c2ln",
    ],
)
async def test_malformed_tokens_are_rejected_as_malformed(verifier, docs, token):
    assert await rejected(verifier, token) == "malformed"
    assert docs.fetched == []


async def test_a_token_that_is_not_a_string_is_malformed(verifier):
    assert await rejected(verifier, b"a.b.c") == "malformed"  # type: ignore[arg-type]
    assert await rejected(verifier, None) == "malformed"  # type: ignore[arg-type]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
headers = st.fixed_dictionaries(
    {}, optional={"alg": st.sampled_from(["RS256", "none", "HS256"]) | json_values, "kid": json_values}
)
claims = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.just(ISSUER) | json_values,
        "aud": st.just(AUDIENCE) | json_values,
        "exp": st.just(NOW + 60) | json_values,
        "nbf": json_values,
        "oid": st.just(OID) | json_values,
        "sub": json_values,
        "roles": json_values,
        "groups": json_values,
    },
)
segments = (
    st.binary(max_size=64).map(b64)
    | json_values.map(b64json)
    | st.text(max_size=30)
    | headers.map(b64json)
    | claims.map(b64json)
)
tokens = st.text(max_size=200) | st.lists(segments, min_size=1, max_size=5).map(".".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=tokens)
def test_no_input_raises_anything_but_token_rejected(keys, token):
    minter = Minter(ISSUER, [keys[0]], AUDIENCE, FakeClock(NOW), TENANT)
    verifier = EntraVerifier([ISSUER], [AUDIENCE], fetch_json=FakeOidcDocuments(minter), clock=FakeClock(NOW))
    try:
        asyncio.run(verifier.verify(token))
    except TokenRejected as exc:
        assert exc.reason
    looks_like_jwt(token)  # never raises either


# --- looks_like_jwt and construction --------------------------------------------------------------


def test_looks_like_jwt_tells_tokens_from_cirrus_keys(minter):
    assert looks_like_jwt(minter.mint())
    assert looks_like_jwt(crafted({"alg": "none"}, {}))
    assert not looks_like_jwt("sk-cirrus-0123456789abcdef" + "x" * 40)
    assert not looks_like_jwt("sk-cirrus-dev-master-key")
    assert not looks_like_jwt(f"{b64json({'typ': 'JWT'})}.{b64json({})}.c2ln")  # no alg
    assert not looks_like_jwt("abc.def.ghi")
    assert not looks_like_jwt(None)  # type: ignore[arg-type]


def test_a_verifier_needs_issuers_and_audiences(docs):
    with pytest.raises(ValueError, match="audience"):
        EntraVerifier([ISSUER], [], fetch_json=docs)
    with pytest.raises(ValueError, match="issuer"):
        EntraVerifier([], [AUDIENCE], fetch_json=docs)


@pytest.mark.parametrize(
    "issuer",
    ["http://login.example.test/t/v2.0", "ftp://login.example.test/t", "http://localhost.example.test/t"],
)
def test_the_default_fetcher_refuses_an_issuer_that_is_not_https(issuer):
    with pytest.raises(ValueError, match="not https"):
        EntraVerifier([issuer], [AUDIENCE])


@pytest.mark.parametrize(
    "issuer", [ISSUER, "http://127.0.0.1:4011/t/v2.0", "http://localhost/t", "http://[::1]:1/t"]
)
async def test_the_default_fetcher_accepts_https_and_loopback_http(issuer):
    verifier = EntraVerifier([issuer], [AUDIENCE])
    await verifier.aclose()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_mangled_token_is_rejected_or_still_valid_never_an_error(keys, data):
    clock = FakeClock(NOW)
    minter = Minter(ISSUER, [keys[0]], AUDIENCE, clock, TENANT)
    verifier = EntraVerifier([ISSUER], [AUDIENCE], fetch_json=FakeOidcDocuments(minter), clock=clock)
    token = minter.mint(roles=["Cirrus.User"])
    start = data.draw(st.integers(0, len(token)))
    end = data.draw(st.integers(start, min(len(token), start + 8)))
    mangled = token[:start] + data.draw(st.text("AZaz09-_.=+/ \x00é", max_size=8)) + token[end:]
    try:
        identity = asyncio.run(verifier.verify(mangled))
    except TokenRejected:
        return
    assert identity.roles == {"Cirrus.User"}  # only a change that did not alter what was signed


# --- tokens that passed are remembered ------------------------------------------------------------


async def test_a_token_that_passed_is_not_checked_again_until_its_cache_time_ends(
    verifier, minter, clock, monkeypatch
):
    token = minter.mint(roles=["Cirrus.User"], ttl_s=3600)
    checks = []
    check = verifier._check_signature
    monkeypatch.setattr(verifier, "_check_signature", lambda *a: checks.append(1) or check(*a))
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first and len(checks) == 1
    clock.now += VERIFIED_CACHE_S
    assert await verifier.verify(token) == first and len(checks) == 2  # checked again


async def test_a_remembered_token_still_expires_on_time(verifier, minter, clock):
    token = minter.mint(roles=["Cirrus.User"], ttl_s=30)
    await verifier.verify(token)
    clock.now += 30 + 60 - 1  # within the leeway: still good, from the cache
    await verifier.verify(token)
    clock.now += 1
    assert await rejected(verifier, token) == "expired"


async def test_only_tokens_that_passed_are_remembered_and_the_cache_is_bounded(verifier, minter, monkeypatch):
    monkeypatch.setattr("shared.services.entra.VERIFIED_CACHE_ENTRIES", 3)
    wrong = minter.mint(audience="api://someone-else")
    assert await rejected(verifier, wrong) == "wrong audience"
    assert await rejected(verifier, wrong) == "wrong audience"
    tokens = [minter.mint(roles=["Cirrus.User"], oid=str(uuid.uuid4())) for _ in range(5)]
    for token in tokens:
        await verifier.verify(token)
    assert list(verifier._verified) == tokens[-3:]
