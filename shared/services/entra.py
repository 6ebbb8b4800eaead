"""Microsoft Entra ID access tokens: who a bearer JWT says the caller is, once it has been checked.

A token is accepted only if its `iss` is exactly one of the configured issuers, its `aud` one of the
configured audiences, its RS256 signature verifies (PyJWT on `cryptography`) against a key that
issuer publishes, and it is inside its `exp`/`nbf` window (with `leeway_s` of clock skew). The
cheap checks come first, so a token that fails them costs no key lookup and no network: the
algorithm (RS256 only, so `none` and the HS256-with-the-public-key confusion never reach a key),
the key id, and the issuer (a token naming an issuer that is not configured triggers no fetch, so
`iss` cannot steer Cirrus to a URL).

Keys come from `{issuer}/.well-known/openid-configuration` → `jwks_uri`, per issuer, and are
cached. They are fetched again when a token names a key id the cache does not hold (Entra rolls
its keys) or when they are older than `max_age_s`, but never more than once per `min_refresh_s`
per issuer, and concurrent requests share one fetch: a burst of tokens with made-up key ids costs
at most one fetch a minute. If a fetch fails the last keys fetched stay in use, so an Entra outage
rejects only tokens signed with a key Cirrus has not seen.

A token that passed is remembered (by its exact text, at most `VERIFIED_CACHE_ENTRIES` of them)
for `VERIFIED_CACHE_S` seconds or until it expires, whichever is sooner: a client sends the same
token for its whole life, and its signature (RS256, ~0.1 ms of CPU) need not be checked on every
request. A key the issuer stops publishing stops its tokens within that time, not at once.

`TokenRejected` is the caller's problem (401); `IssuerUnavailable` is an outage or a
misconfiguration on Cirrus's side (503). Nothing else escapes `verify`, whatever the token holds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("cirrus.entra")

ALGORITHM = "RS256"
MIN_RSA_BITS = 2048
# Entra access tokens carry at most 200 groups (more becomes an overage claim), ~10 KB at most.
MAX_TOKEN_CHARS = 32 * 1024
MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_KEYS = 100  # per JWKS; Entra publishes a handful
FETCH_TIMEOUT_S = 5.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# The signature may be empty (`alg: none`), so that such a token is refused for its algorithm.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", re.ASCII)
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII)
_SAFE_ALG = re.compile(r"[A-Za-z0-9+._-]{1,16}", re.ASCII)
_MAX_KID_CHARS = 256
VERIFIED_CACHE_S = 300.0
VERIFIED_CACHE_ENTRIES = 10_000

FetchJson = Callable[[str], Awaitable[dict[str, Any]]]


class TokenRejected(Exception):
    """The token is not acceptable. `reason` is a short phrase safe to log (never token content
    beyond a well-formed algorithm name)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IssuerUnavailable(Exception):
    """An issuer's discovery document or keys could not be fetched or used: not the caller's fault."""


@dataclass(frozen=True)
class EntraIdentity:
    """The caller a verified token names."""

    issuer: str
    tenant_id: str | None  # tid
    object_id: str  # oid: the user's, service principal's or managed identity's object id
    app_id: str | None  # azp (v2) or appid (v1): the client application
    subject: str  # sub
    roles: frozenset[str]  # app roles assigned to the caller
    groups: frozenset[str]  # group object ids, when the app registration emits them
    name: str | None  # preferred_username, else name: for audit display only, never for decisions
    is_app: bool  # an application or managed identity acting as itself, not a signed-in user
    expires_at: float  # exp


def looks_like_jwt(token: str) -> bool:
    """Whether `token` is shaped like a JWS (three base64url segments, a header with `alg`), so it
    is worth verifying as an Entra token rather than looking up as a Cirrus key. Verifies nothing."""
    try:  # the header only: the claims are decoded once, by `verify`
        return isinstance(token, str) and "alg" in _b64json(_segments(token)[0])
    except TokenRejected:
        return False


def _b64json(segment: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise TokenRejected("malformed") from None
    if not isinstance(value, dict):
        raise TokenRejected("malformed")
    return value


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The token's header and claims, unverified; TokenRejected("malformed") for anything that is
    not a compact JWS of two JSON objects."""
    header, payload, _signature = _segments(token)
    return _b64json(header), _b64json(payload)


def _segments(token: str) -> list[str]:
    """A compact JWS's three segments, still encoded; TokenRejected("malformed") if it is not one."""
    if len(token) > MAX_TOKEN_CHARS or not _JWT_SHAPE.fullmatch(token):
        raise TokenRejected("malformed")
    return token.split(".")


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRejected("malformed")
    return float(value)


def _string(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None


def _strings(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TokenRejected("malformed")
    return frozenset(value)


def discovery_url(issuer: str) -> str:
    """Where an issuer publishes its OpenID configuration (OpenID Connect Discovery 1.0, §4)."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def check_fetch_url(url: str) -> None:
    """Raise IssuerUnavailable unless `url` is https, or http to a loopback address (the local
    issuer of `make dev` and the tests)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise IssuerUnavailable("not a URL") from None
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and host is not None and _is_loopback(host):
        return
    raise IssuerUnavailable("refusing a URL that is not https (plain http is for loopback only)")


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpJsonFetcher:
    """GET a JSON object over https (http to loopback only), with a timeout, a size cap and no
    redirects (a redirect could leave https). Every failure is IssuerUnavailable."""

    def __init__(self, *, timeout_s: float = FETCH_TIMEOUT_S, max_bytes: int = MAX_DOCUMENT_BYTES) -> None:
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        self._session: Any = None  # aiohttp.ClientSession, made on first use (bound to the loop)

    async def __call__(self, url: str) -> dict[str, Any]:
        check_fetch_url(url)
        import aiohttp  # noqa: PLC0415 - keeps aiohttp off /health's path

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        try:
            async with self._session.get(
                url, allow_redirects=False, headers={"Accept": "application/json"}
            ) as response:
                if response.status != 200:
                    raise IssuerUnavailable(f"HTTP {response.status} from the issuer")
                body = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise IssuerUnavailable("the issuer's document is too large")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise IssuerUnavailable(f"the issuer could not be reached ({type(exc).__name__})") from None
        try:
            document = json.loads(bytes(body))
        except (ValueError, RecursionError):
            raise IssuerUnavailable("the issuer's document is not JSON") from None
        if not isinstance(document, dict):
            raise IssuerUnavailable("the issuer's document is not a JSON object")
        return document

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _public_keys(jwks: Mapping[str, Any]) -> dict[str, Any]:
    """The usable signing keys of a JWKS by kid: RSA, for signatures, 2048 bits or more, RS256 if it
    names an algorithm. Only the public parameters are read, so a JWKS that leaks a private key
    still yields a public key. Anything else is skipped, not fatal: one odd key must not take the
    issuer's other keys down with it."""
    import jwt  # noqa: PLC0415 - PyJWT and cryptography stay off /health's path
    from jwt.algorithms import RSAAlgorithm  # noqa: PLC0415

    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise IssuerUnavailable("the issuer's JWKS has no key list")
    keys: dict[str, Any] = {}
    for jwk in entries[:MAX_KEYS]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig":
            continue
        kid, n, e = jwk.get("kid"), jwk.get("n"), jwk.get("e")
        if not (isinstance(kid, str) and kid and isinstance(n, str) and isinstance(e, str)):
            continue
        if jwk.get("alg", ALGORITHM) != ALGORITHM:
            continue
        try:
            key = RSAAlgorithm.from_jwk({"kty": "RSA", "n": n, "e": e})
        except (jwt.PyJWTError, ValueError, TypeError):
            log.warning("entra: ignoring key %s of the issuer's JWKS: not a valid RSA key", kid[:64])
            continue
        if getattr(key, "key_size", 0) < MIN_RSA_BITS:
            log.warning("entra: ignoring key %s of the issuer's JWKS: under %d bits", kid[:64], MIN_RSA_BITS)
            continue
        keys[kid] = key
    return keys


@dataclass
class _IssuerKeys:
    """One issuer's cached keys and the state of fetching them."""

    keys: dict[str, Any] = field(default_factory=dict)
    fetched_at: float | None = None  # when `keys` were fetched (the verifier's clock)
    last_attempt: float | None = None  # when a fetch last started, successful or not
    failed: bool = False  # whether that last fetch failed
    refresh: asyncio.Future[None] | None = None  # the fetch under way, shared by every waiter


class EntraVerifier:
    """Verifies Entra ID access tokens for the configured issuers and audiences (see the module
    docstring). One per worker process: it holds the key cache."""

    def __init__(
        self,
        issuers: Sequence[str],
        audiences: Sequence[str],
        *,
        fetch_json: FetchJson | None = None,
        clock: Callable[[], float] = time.time,
        leeway_s: float = 60.0,
        min_refresh_s: float = 60.0,
        max_age_s: float = 24 * 3600,
    ) -> None:
        if not issuers or not all(isinstance(i, str) and i for i in issuers):
            raise ValueError("EntraVerifier needs at least one issuer")
        if not audiences or not all(isinstance(a, str) and a for a in audiences):
            raise ValueError("EntraVerifier needs at least one audience")
        self._fetcher: HttpJsonFetcher | None = None
        if fetch_json is None:
            for issuer in issuers:  # fail fast on a URL the default fetcher would refuse
                try:
                    check_fetch_url(discovery_url(issuer))
                except IssuerUnavailable as exc:
                    raise ValueError(f"Entra issuer {issuer!r}: {exc}") from None
            fetch_json = self._fetcher = HttpJsonFetcher()
        self._fetch = fetch_json
        self._issuers = {issuer: _IssuerKeys() for issuer in issuers}
        self._audiences = list(dict.fromkeys(audiences))
        self._clock = clock
        self._leeway = leeway_s
        self._min_refresh = min_refresh_s
        self._max_age = max_age_s
        # Tokens that passed: text -> (identity, until when it is taken without checking again).
        self._verified: dict[str, tuple[EntraIdentity, float]] = {}

    async def verify(self, token: str) -> EntraIdentity:
        """The identity `token` proves; TokenRejected or IssuerUnavailable otherwise."""
        if not isinstance(token, str):
            raise TokenRejected("malformed")
        remembered = self._verified.get(token)
        if remembered is not None:
            if self._clock() < remembered[1]:
                return remembered[0]
            del self._verified[token]
        identity = await self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_ENTRIES:
            self._verified.pop(next(iter(self._verified)))  # the oldest
        until = min(identity.expires_at + self._leeway, self._clock() + VERIFIED_CACHE_S)
        self._verified[token] = (identity, until)
        return identity

    async def _verify(self, token: str) -> EntraIdentity:
        header, claims = _split(token)
        alg = header.get("alg")
        if alg != ALGORITHM:
            shown = alg if isinstance(alg, str) and _SAFE_ALG.fullmatch(alg) else "?"
            raise TokenRejected(f"algorithm not allowed: {shown}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_CHARS:
            raise TokenRejected("no key id")
        issuer = claims.get("iss")
        if not isinstance(issuer, str) or issuer not in self._issuers:
            raise TokenRejected("wrong issuer")
        key = await self._signing_key(issuer, kid)
        claims = self._check_signature(token, key, issuer)
        return self._identity(issuer, claims)

    def _check_signature(self, token: str, key: Any, issuer: str) -> dict[str, Any]:
        """The claims, once PyJWT has verified the signature with `key`, the audience and the issuer,
        and the presence of the claims every Entra token carries. Time is checked in `_identity`,
        by this verifier's clock."""
        import jwt  # noqa: PLC0415 - PyJWT stays off /health's path

        try:
            return jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audiences,
                issuer=issuer,
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iss", "aud", "sub"],
                },
            )
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad signature") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"missing claim: {exc.claim}") from None  # one of the four above
        except (jwt.PyJWTError, ValueError, TypeError):
            raise TokenRejected("malformed") from None

    def _identity(self, issuer: str, claims: dict[str, Any]) -> EntraIdentity:
        now = self._clock()
        expires = _number(claims, "exp")
        not_before = _number(claims, "nbf")
        if expires is None or expires <= now - self._leeway:
            raise TokenRejected("expired")
        if not_before is not None and not_before > now + self._leeway:
            raise TokenRejected("not yet valid")
        oid = claims.get("oid")
        if not isinstance(oid, str) or not _GUID.fullmatch(oid):
            raise TokenRejected("no object id")
        subject = _string(claims, "sub")
        if subject is None:
            raise TokenRejected("malformed")
        username = _string(claims, "preferred_username")
        user_claims = "scp" in claims or username is not None or "upn" in claims
        return EntraIdentity(
            issuer=issuer,
            tenant_id=_string(claims, "tid"),
            object_id=oid.lower(),
            app_id=_string(claims, "azp") or _string(claims, "appid"),
            subject=subject,
            roles=_strings(claims, "roles"),
            groups=_strings(claims, "groups"),
            name=username or _string(claims, "name"),
            is_app=claims.get("idtyp") == "app" or not user_claims,
            expires_at=expires,
        )

    # --- keys ---------------------------------------------------------------------------------

    async def _signing_key(self, issuer: str, kid: str) -> Any:
        state = self._issuers[issuer]
        now = self._clock()
        fresh = state.fetched_at is not None and now - state.fetched_at < self._max_age
        if fresh and kid in state.keys:
            return state.keys[kid]
        if state.refresh is None and (
            state.last_attempt is None or now - state.last_attempt >= self._min_refresh
        ):
            state.last_attempt = now
            state.refresh = asyncio.ensure_future(self._refresh(issuer, state))
        if state.refresh is not None:
            # Shielded: a caller that gives up (client gone) must not cancel the fetch the others
            # are waiting for.
            await asyncio.shield(state.refresh)
        if kid in state.keys:
            return state.keys[kid]  # stale only while fetching fails: better than refusing everyone
        if state.failed:
            raise IssuerUnavailable("the issuer's signing keys could not be fetched")
        raise TokenRejected("unknown signing key")

    async def _refresh(self, issuer: str, state: _IssuerKeys) -> None:
        try:
            state.keys = await self._load_keys(issuer)
            state.fetched_at = self._clock()
            state.failed = False
        except IssuerUnavailable as exc:
            state.failed = True
            log.warning("entra: fetching the keys of issuer %s failed: %s", issuer, exc)
        except Exception:  # a fetch_json of the caller's that raises its own errors: still an outage
            state.failed = True
            log.exception("entra: fetching the keys of issuer %s failed", issuer)
        finally:
            state.refresh = None

    async def _load_keys(self, issuer: str) -> dict[str, Any]:
        config = await self._fetch(discovery_url(issuer))
        if config.get("issuer") != issuer:
            raise IssuerUnavailable("the discovery document names another issuer")
        jwks_uri = config.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise IssuerUnavailable("the discovery document has no jwks_uri")
        keys = _public_keys(await self._fetch(jwks_uri))
        log.info("entra: %d signing keys for issuer %s", len(keys), issuer)
        return keys

    async def aclose(self) -> None:
        """Stop fetches under way and close the HTTP session this verifier made, if any."""
        for state in self._issuers.values():
            if state.refresh is not None:
                state.refresh.cancel()
        if self._fetcher is not None:
            await self._fetcher.aclose()
