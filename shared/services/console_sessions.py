"""Console sign-in: a key exchanged for a short-lived session, named by a signed cookie.

The cookie is `<session id>.<expiry>.<signature>`: an HMAC (SHA-256) over the id and expiry with a
key derived from the key-hash secret, so a forged or altered cookie is refused before any read.
The session itself is a Cosmos item (in `keys`, partitioned by its own id, `object`
`console.session`, so key lists and key lookups never see it) holding only the key's id, its name
and whether it is the master key: never the key. Sign-out marks the item ended, so a replayed
cookie is refused at once on every instance. The key behind a session is re-checked on every request: a
key revoked or expired since sign-in ends its sessions, and so does a change of master key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.clients.protocols import DocumentStore
from shared.errors import AuthenticationError
from shared.services.auth import MASTER_KEY_ID, AuthService, CallerKind, Principal

CONTAINER = "keys"
OBJECT = "console.session"
COOKIE_NAME = "cirrus_console"
CONSOLE_HEADER = "x-cirrus-console"  # with value "1": the only requests a session cookie authenticates
SESSION_TTL_S = 8 * 3600
_ID_PREFIX = "csess_"
NO_SESSION = "No console session: sign in with an API key."
ENDED = "The console session has ended; sign in again."


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in console: who (by key id, never the key) and until when."""

    session_id: str
    key_id: str | None  # None for the master key
    name: str | None
    is_master: bool  # an admin: the master key or an Entra Cirrus.Admin
    expires_at: int
    kind: CallerKind = "key"

    def public(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "is_master": self.is_master,
            "kind": self.kind,
            "expires_at": self.expires_at,
        }


class ConsoleSessions:
    def __init__(
        self,
        documents: DocumentStore,
        auth: AuthService,
        signing_key: bytes,
        *,
        ttl_s: int = SESSION_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._documents = documents
        self._auth = auth
        self._signing_key = signing_key
        self._ttl = ttl_s
        self._clock = clock

    async def sign_in(self, key: str) -> tuple[str, ConsoleSession]:
        """A new session for `key` or an Entra ID token (401 if Cirrus does not accept it) and its
        cookie value. A token's session ends when the token expires, if that is sooner."""
        principal = await self._auth.authenticate(None, key)
        name = principal.name
        if principal.kind == "key":
            stored = await self._auth_lookup(principal.key_id)
            name = (stored or {}).get("key_alias")  # the name it was created with
        session_id = _ID_PREFIX + secrets.token_hex(16)
        expires_at = int(self._clock()) + self._ttl
        if principal.expires_at is not None:
            expires_at = min(expires_at, int(principal.expires_at))
        await self._documents.create(
            CONTAINER,
            {
                "id": session_id,
                "pk": session_id,
                "object": OBJECT,
                "key_id": principal.key_id,
                "is_master": principal.kind == "master",
                "kind": principal.kind,
                "name": name,
                # A session of the master key ends when the master key changes.
                "master": self._master_mark() if principal.kind == "master" else None,
                "created_at": int(self._clock()),
                "expires_at": expires_at,
                "ttl": self._ttl + 3600,  # Cosmos removes it after expiry; expiry is checked anyway
            },
        )
        session = _session(session_id, principal, name, expires_at)
        return self.cookie_value(session_id, expires_at), session

    async def resolve(self, cookie: str | None) -> tuple[ConsoleSession, Principal]:
        """The live session behind `cookie` and its key's principal, re-checked now; 401 otherwise."""
        session_id, expires_at = self.verify(cookie)
        doc = await self._read(session_id)
        if (
            doc is None
            or doc.get("object") != OBJECT
            or doc.get("revoked_at") is not None
            or int(doc.get("expires_at", 0)) != expires_at
        ):
            raise AuthenticationError(ENDED)
        if doc.get("is_master"):
            if not hmac.compare_digest(str(doc.get("master") or ""), self._master_mark()):
                raise AuthenticationError(ENDED)
            principal = await self._auth.principal_for(MASTER_KEY_ID)
        else:
            principal = await self._auth.principal_for(str(doc.get("key_id")))
        return _session(session_id, principal, doc.get("name"), expires_at), principal

    async def sign_out(self, cookie: str | None) -> ConsoleSession | None:
        """End the session behind `cookie`, if there is one, and return it if it was live; signing
        out twice is not an error."""
        try:
            session_id, _ = self.verify(cookie)
        except AuthenticationError:
            return None
        try:
            live: ConsoleSession | None = (await self.resolve(cookie))[0]
        except AuthenticationError:
            live = None
        # Overwritten as ended rather than deleted: an idempotent upsert whether or not the item is
        # still there, and Cosmos drops the tombstone after its TTL.
        await self._documents.upsert(
            CONTAINER,
            {
                "id": session_id,
                "pk": session_id,
                "object": OBJECT,
                "revoked_at": int(self._clock()),
                "expires_at": 0,
                "ttl": self._ttl + 3600,
            },
        )
        return live

    def cookie_value(self, session_id: str, expires_at: int) -> str:
        payload = f"{session_id}.{expires_at}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, cookie: str | None) -> tuple[str, int]:
        """The session id and expiry a cookie names, if Cirrus signed it and it has not expired."""
        if not cookie:
            raise AuthenticationError(NO_SESSION)
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[0].startswith(_ID_PREFIX) or not parts[1].isascii():
            raise AuthenticationError(ENDED)
        session_id, expiry, signature = parts
        if not hmac.compare_digest(signature.encode(), self._sign(f"{session_id}.{expiry}").encode()):
            raise AuthenticationError(ENDED)
        if not expiry.isdigit() or int(expiry) <= self._clock():
            raise AuthenticationError(ENDED)
        return session_id, int(expiry)

    def _sign(self, payload: str) -> str:
        return hmac.new(self._signing_key, payload.encode(), hashlib.sha256).hexdigest()

    def _master_mark(self) -> str:
        return self._sign("master:" + self._auth.master_fingerprint())

    async def _read(self, session_id: str) -> dict[str, Any] | None:
        return await self._documents.read(CONTAINER, session_id, session_id)

    async def _auth_lookup(self, key_id: str) -> dict[str, Any] | None:
        stored = await self._auth.lookup(key_id)
        return dict(stored) if stored is not None else None


def signing_key(hash_secret: bytes) -> bytes:
    """The console's cookie-signing key, derived from the key-hash secret (never used bare)."""
    return hmac.new(hash_secret, b"cirrus-console-sessions", hashlib.sha256).digest()


def _session(session_id: str, principal: Principal, name: Any, expires_at: int) -> ConsoleSession:
    return ConsoleSession(
        session_id=session_id,
        key_id=None if principal.kind == "master" else principal.key_id,
        name=str(name) if name is not None else None,
        is_master=principal.is_master,
        expires_at=expires_at,
        kind=principal.kind,
    )
