"""Event-stream tokens: a short-lived, single-purpose credential for the one request a browser
cannot put a key on.

A browser's `EventSource` sends no headers of its own, so a page following a job's events cannot
send `Authorization`. A caller who may see the job mints a token for it (`POST
/v1/jobs/{job_id}/events/token`, authenticated as usual) and the page puts it in the URL
(`GET /v1/jobs/{job_id}/events?token=...`). An API key is never accepted in a URL, where proxies,
logs and browser tools keep it.

The token is `cst_<payload>.<signature>`: the payload names its purpose (the route it is good for),
the resource (the job id), the key id it was minted by and its expiry, as base64url JSON; the
signature is an HMAC (SHA-256) over the payload with a key derived from the key-hash secret, so a
token cannot be forged or altered and is checked without a read. It is refused after it expires,
for another job, and on any route but its own. The key behind it is read again when the token is
used (`AuthService.principal_for`): revoking the key ends its tokens at once, and the route then
checks, as for any caller, that the key may see the job. A stream already open when the token
expires runs on; a reconnection after it needs a new token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import AuthenticationError
from shared.services.auth import SECRET_PREFIX, Principal

TOKEN_TTL_S = 600  # ten minutes: mint one per stream, just before opening it
_PREFIX = "cst_"
INVALID = "Invalid event-stream token."
EXPIRED = "The event-stream token has expired; mint a new one."
ELSEWHERE = "This event-stream token is for another job or another route."
NO_KEYS_IN_URLS = (
    "API keys are never accepted in a URL. Send the key in the Authorization header, or mint an "
    "event-stream token for this job with POST /v1/jobs/{job_id}/events/token."
)


@dataclass(frozen=True)
class TokenScope:
    """What a token is good for: a purpose (one route) and the route value it is bound to."""

    purpose: str
    param: str


JOB_EVENTS = TokenScope("job.events", "job_id")


@dataclass(frozen=True)
class StreamToken:
    token: str
    expires_at: int


class StreamTokens:
    def __init__(
        self, signing_key: bytes, *, ttl_s: int = TOKEN_TTL_S, clock: Callable[[], float] = time.time
    ) -> None:
        self._signing_key = signing_key
        self._ttl = ttl_s
        self._clock = clock

    def mint(self, principal: Principal, scope: TokenScope, resource: str) -> StreamToken:
        """A token for `principal` (by key id) to use `scope`'s route on `resource`, and its expiry.
        The caller has checked that the principal may see the resource."""
        expires_at = int(self._clock()) + self._ttl
        claims = {"p": scope.purpose, "r": resource, "k": principal.key_id, "e": expires_at}
        payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        return StreamToken(f"{_PREFIX}{payload}.{self._sign(payload)}", expires_at)

    def verify(self, token: str, scope: TokenScope, resource: str) -> str:
        """The key id behind `token` if Cirrus signed it for `scope` on `resource` and it has not
        expired; 401 otherwise."""
        if token.startswith(SECRET_PREFIX) or token.startswith("sk-"):
            raise _refused(NO_KEYS_IN_URLS)
        payload, _, signature = token.removeprefix(_PREFIX).partition(".")
        if not token.startswith(_PREFIX) or not hmac.compare_digest(
            signature.encode(), self._sign(payload).encode()
        ):
            raise _refused(INVALID)
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, binascii.Error):  # signed by us, so only a change of format lands here
            raise _refused(INVALID) from None
        if not isinstance(claims, dict) or claims.get("p") != scope.purpose or claims.get("r") != resource:
            raise _refused(ELSEWHERE)
        expires_at = claims.get("e")
        if not isinstance(expires_at, int) or expires_at <= self._clock():
            raise _refused(EXPIRED)
        key_id = claims.get("k")
        if not isinstance(key_id, str) or not key_id:
            raise _refused(INVALID)
        return key_id

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._signing_key, payload.encode(), hashlib.sha256).digest())


def signing_key(hash_secret: bytes) -> bytes:
    """The event-stream tokens' signing key, derived from the key-hash secret (never used bare)."""
    return hmac.new(hash_secret, b"cirrus-stream-tokens", hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _refused(message: str) -> AuthenticationError:
    return AuthenticationError(message, param="token", code="invalid_token")
