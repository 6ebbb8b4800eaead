"""A local OpenID Connect issuer shaped like Microsoft Entra ID, for tests and `make dev`.

It serves, on 127.0.0.1 over plain HTTP, what Entra serves for a tenant: the discovery document at
`{issuer}/.well-known/openid-configuration` and the signing keys (JWKS) at
`http://127.0.0.1:<port>/<tenant>/discovery/v2.0/keys`, with the issuer
`http://127.0.0.1:<port>/<tenant>/v2.0` for the fixed local tenant `LOCAL_TENANT_ID`. It mints v2
access tokens as Entra does for a signed-in user or for an application (a managed identity or an
app registration acting as itself: `idtyp: app`), RS256 with a `kid`, for `LOCAL_AUDIENCE` unless
told otherwise. It has no authorize or token endpoint: tokens come from `mint` or the `token`
command, never from a login.

In a test::

    with LocalIssuer.start() as issuer:
        token = issuer.mint(roles=["Cirrus.User"])
        issuer.rotate()          # a new signing key; the old one stays published unless keep_old=False
        issuer.jwks_requests     # how often the keys were fetched

As processes (`make dev` runs `serve` with its state under .cirrus/)::

    python -m tools.oidc_issuer serve --port 4011 --state .cirrus/oidc-issuer
    TOKEN=$(python -m tools.oidc_issuer token --state .cirrus/oidc-issuer --role Cirrus.User)
    python -m tools.oidc_issuer token --state DIR --app --role Cirrus.Admin --ttl 600
    python -m tools.oidc_issuer rotate --state DIR [--drop-old]

The state directory holds the private keys (`keys.json`, mode 0600) and the issuer's address and
audience (`issuer.json`), so a restarted issuer keeps its keys and `token` signs with the key the
running `serve` publishes (it reloads `keys.json` when `rotate` changes it). Development only: the
keys are unprotected files and anyone who can read them can mint tokens.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

LOOPBACK = "127.0.0.1"
# Fixed, so the local issuer's URL (and so CIRRUS_ENTRA_ISSUERS of `make dev`) is predictable.
LOCAL_TENANT_ID = "c1a5c1a5-0000-4000-8000-000000000000"
LOCAL_AUDIENCE = "api://cirrus-local"
LOCAL_CLIENT_ID = "c1a5c1a5-0000-4000-8000-0000000000c1"  # the client application (azp) of minted tokens
DEV_USER_OID = "c1a5c1a5-0000-4000-8000-000000000001"  # the caller of a user token unless --oid
DEV_APP_OID = "c1a5c1a5-0000-4000-8000-000000000002"  # the caller of an --app token unless --oid
KEYS_FILE = "keys.json"
ISSUER_FILE = "issuer.json"


def issuer_url(port: int, tenant_id: str = LOCAL_TENANT_ID) -> str:
    """The local issuer's `iss` on `port`: Entra's v2 shape, on loopback."""
    return f"http://{LOOPBACK}:{port}/{tenant_id}/v2.0"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    """An RSA private key and the `kid` its public half is published under."""

    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, bits: int = 2048, kid: str | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # Entra's kids are base64url thumbprints of 27 characters; this is one of the public key.
        return cls(kid or _b64url(hashlib.sha256(der).digest()[:20]), key)

    def public_jwk(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {"kty": "RSA", "use": "sig", "kid": self.kid, "n": jwk["n"], "e": jwk["e"]}

    def pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    @classmethod
    def from_pem(cls, kid: str, pem: str) -> SigningKey:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"key {kid} is not an RSA key")
        return cls(kid, key)


@dataclass
class Minter:
    """Entra-shaped v2 access tokens of one issuer, signed with the newest of `keys`, and the
    documents that publish the keys. No HTTP: `LocalIssuer` serves it; unit tests use it as is."""

    issuer: str
    keys: list[SigningKey]
    audience: str = LOCAL_AUDIENCE
    clock: Callable[[], float] = time.time
    tenant_id: str = LOCAL_TENANT_ID

    @property
    def current(self) -> SigningKey:
        return self.keys[-1]

    def discovery(self, jwks_uri: str) -> dict[str, Any]:
        """The OpenID configuration, as Entra's v2 endpoint words it (what a verifier reads)."""
        base = self.issuer.removesuffix("/v2.0")
        return {
            "issuer": self.issuer,
            "jwks_uri": jwks_uri,
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in self.keys]}

    def claims(
        self,
        *,
        roles: Sequence[str] = (),
        oid: str | None = None,
        app: bool = False,
        groups: Sequence[str] = (),
        ttl_s: float = 3600,
        audience: str | None = None,
        client_id: str = LOCAL_CLIENT_ID,
        name: str | None = None,
        without: Sequence[str] = (),
        **extra_claims: Any,
    ) -> dict[str, Any]:
        """The claims `mint` signs. `extra_claims` add or replace claims (one given as None is left
        out); `without` names claims to leave out, to test their absence."""
        now = int(self.clock())
        oid = oid or (DEV_APP_OID if app else DEV_USER_OID)
        claims: dict[str, Any] = {
            "aud": audience or self.audience,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": int(now + ttl_s),
            "aio": _b64url(secrets.token_bytes(48)),
            "azp": client_id,
            "azpacr": "1" if app else "0",  # a client secret for apps; a public client for users
            "oid": oid,
            "rh": _b64url(secrets.token_bytes(24)),
            "tid": self.tenant_id,
            "uti": _b64url(secrets.token_bytes(16)),
            "ver": "2.0",
        }
        if app:
            claims |= {"idtyp": "app", "sub": oid}  # an app's sub is its service principal's oid
        else:
            # A user's sub is pairwise (one per user and client application), unlike oid.
            sub = _b64url(hashlib.sha256(f"{oid}:{client_id}".encode()).digest())
            username = name or f"user-{oid[:8]}@cirrus.local"
            claims |= {
                "name": name or "Cirrus Dev User",
                "preferred_username": username,
                "scp": "user_impersonation",
                "sub": sub,
            }
        if roles:
            claims["roles"] = list(roles)
        if groups:
            claims["groups"] = list(groups)
        claims.update(extra_claims)
        return {k: v for k, v in claims.items() if v is not None and k not in without}

    def mint(self, *, key: SigningKey | None = None, **options: Any) -> str:
        """A signed access token; `options` are those of `claims`. `key` signs instead of the newest
        key (with its own kid), e.g. a key that is not published."""
        key = key or self.current
        headers = {"typ": "JWT", "kid": key.kid}
        return jwt.encode(self.claims(**options), key.private_key, algorithm="RS256", headers=headers)


# --- HTTP ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    issuer: LocalIssuer  # set on the subclass each server makes

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self.issuer.document(path)
        if body is None:
            self._send(HTTPStatus.NOT_FOUND, {"error": "not_found"})
        else:
            self._send(HTTPStatus.OK, body)

    def _send(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        if self.issuer.verbose:
            sys.stderr.write(f"oidc-issuer: {format % args}\n")


@dataclass
class LocalIssuer:
    """The issuer over real HTTP on 127.0.0.1 (a thread of this process); see the module docstring."""

    minter: Minter
    server: ThreadingHTTPServer
    state_dir: Path | None = None  # where `keys.json` is reloaded from when it changes (`serve`)
    verbose: bool = False
    discovery_overrides: dict[str, Any] = field(default_factory=dict)  # to serve a broken document
    jwks_requests: int = 0
    discovery_requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _keys_mtime: int = 0

    @classmethod
    def start(
        cls,
        *,
        port: int = 0,
        keys: Sequence[SigningKey] | None = None,
        audience: str = LOCAL_AUDIENCE,
        clock: Callable[[], float] = time.time,
        state_dir: Path | None = None,
        verbose: bool = False,
    ) -> LocalIssuer:
        """Serve on `port` (0: a free one) with `keys` (default: a new 2048-bit key)."""
        handler: type[_Handler] = type("Handler", (_Handler,), {})
        server = ThreadingHTTPServer((LOOPBACK, port), handler)
        server.daemon_threads = True
        minter = Minter(
            issuer_url(server.server_address[1]), list(keys or [SigningKey.generate()]), audience, clock
        )
        issuer = cls(minter, server, state_dir, verbose)
        handler.issuer = issuer
        if state_dir is not None:
            issuer._keys_mtime = (state_dir / KEYS_FILE).stat().st_mtime_ns
        issuer._thread = threading.Thread(target=server.serve_forever, name="oidc-issuer", daemon=True)
        issuer._thread.start()
        return issuer

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def issuer_url(self) -> str:
        return self.minter.issuer

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer_url}/.well-known/openid-configuration"

    @property
    def jwks_uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/{self.minter.tenant_id}/discovery/v2.0/keys"

    def mint(self, **options: Any) -> str:
        """A token signed with the current key; options as `Minter.claims` (roles, oid, app, groups,
        ttl_s, audience, client_id, name, any extra claim) plus `key`."""
        with self._lock:
            return self.minter.mint(**options)

    def rotate(self, *, keep_old: bool = True) -> SigningKey:
        """Sign with a new key from now on; the old keys stay published unless `keep_old` is False."""
        key = SigningKey.generate()
        with self._lock:
            self.minter.keys = [*self.minter.keys, key] if keep_old else [key]
        return key

    def document(self, path: str) -> dict[str, Any] | None:
        """The JSON served at `path`, or None for a 404; counts the fetches."""
        tenant = self.minter.tenant_id
        with self._lock:
            self._reload_keys()
            if path == f"/{tenant}/v2.0/.well-known/openid-configuration":
                self.discovery_requests += 1
                return {**self.minter.discovery(self.jwks_uri), **self.discovery_overrides}
            if path == f"/{tenant}/discovery/v2.0/keys":
                self.jwks_requests += 1
                return self.minter.jwks()
        return None

    def _reload_keys(self) -> None:
        if self.state_dir is None:
            return
        with contextlib.suppress(OSError):
            mtime = (self.state_dir / KEYS_FILE).stat().st_mtime_ns
            if mtime != self._keys_mtime:
                self.minter.keys = load_keys(self.state_dir)
                self._keys_mtime = mtime

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> LocalIssuer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- state on disk (the processes) --------------------------------------------------------------


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write `path` with mode 0600 from the start (never briefly readable), replacing it atomically."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=1)
    os.replace(tmp, path)


def load_keys(state_dir: Path) -> list[SigningKey]:
    data = json.loads((state_dir / KEYS_FILE).read_text())
    return [SigningKey.from_pem(entry["kid"], entry["pem"]) for entry in data["keys"]]


def save_keys(state_dir: Path, keys: Sequence[SigningKey]) -> None:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(state_dir / KEYS_FILE, {"keys": [{"kid": k.kid, "pem": k.pem()} for k in keys]})


def load_or_create_keys(state_dir: Path) -> list[SigningKey]:
    if (state_dir / KEYS_FILE).exists():
        return load_keys(state_dir)
    keys = [SigningKey.generate()]
    save_keys(state_dir, keys)
    return keys


def minter_from_state(state_dir: Path) -> Minter:
    """The running `serve`'s minter, from its state directory (for `token` and e2e tests)."""
    path = state_dir / ISSUER_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: start `python -m tools.oidc_issuer serve` first")
    meta = json.loads(path.read_text())
    return Minter(meta["issuer"], load_keys(state_dir), meta["audience"])


def mint_from_state(state_dir: Path, **options: Any) -> str:
    """A token from the issuer whose state is in `state_dir`; options as `Minter.claims`."""
    return minter_from_state(state_dir).mint(**options)


def serve(port: int, state_dir: Path, audience: str) -> LocalIssuer:
    """Start the issuer on `port` with the keys in `state_dir` (made on first use), and record its
    address there for `token`."""
    keys = load_or_create_keys(state_dir)
    issuer = LocalIssuer.start(port=port, keys=keys, audience=audience, state_dir=state_dir, verbose=True)
    _write_private(state_dir / ISSUER_FILE, {"issuer": issuer.issuer_url, "audience": audience})
    return issuer


# --- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.oidc_issuer", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="serve discovery and keys on 127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=4011)
    serve_cmd.add_argument("--state", type=Path, required=True, help="keys and address (made if missing)")
    serve_cmd.add_argument("--audience", default=LOCAL_AUDIENCE, help="the default aud of minted tokens")

    token_cmd = commands.add_parser("token", help="print an access token of the running issuer")
    token_cmd.add_argument("--state", type=Path, required=True, help="the state directory of `serve`")
    token_cmd.add_argument("--role", action="append", default=[], help="an app role (repeatable)")
    token_cmd.add_argument("--group", action="append", default=[], help="a group object id (repeatable)")
    token_cmd.add_argument("--oid", help=f"the caller's oid (default {DEV_USER_OID}, apps {DEV_APP_OID})")
    token_cmd.add_argument("--app", action="store_true", help="an application's token (idtyp app)")
    token_cmd.add_argument("--name", help="the user's preferred_username")
    token_cmd.add_argument("--client-id", default=LOCAL_CLIENT_ID, help="the client application (azp)")
    token_cmd.add_argument("--ttl", type=float, default=3600, help="seconds until it expires")
    token_cmd.add_argument("--audience", help="aud (default: the audience `serve` was started with)")

    rotate_cmd = commands.add_parser("rotate", help="sign with a new key from now on")
    rotate_cmd.add_argument("--state", type=Path, required=True)
    rotate_cmd.add_argument("--drop-old", action="store_true", help="stop publishing the old keys")

    args = parser.parse_args(argv)
    if args.command == "serve":
        issuer = serve(args.port, args.state, args.audience)
        print(f"oidc-issuer: {issuer.issuer_url} (keys at {issuer.jwks_uri})", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()  # until SIGTERM/SIGINT; the server thread is a daemon
        return 0
    if args.command == "token":
        try:
            token = mint_from_state(
                args.state,
                roles=args.role,
                groups=args.group,
                oid=args.oid,
                app=args.app,
                name=args.name,
                client_id=args.client_id,
                ttl_s=args.ttl,
                audience=args.audience,
            )
        except FileNotFoundError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(token)
        return 0
    keys = load_keys(args.state)
    new = SigningKey.generate()
    save_keys(args.state, [new] if args.drop_old else [*keys, new])
    print(new.kid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
