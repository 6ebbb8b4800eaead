"""Who is calling: the bearer key checked against the master key (per-key management comes later)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from pydantic import SecretStr

from shared.errors import AuthenticationError

MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
BAD_KEY = "Incorrect API key provided."


@dataclass(frozen=True)
class Principal:
    """The authenticated caller. `key_id` is safe to log; the key itself never is."""

    key_id: str
    is_master: bool


class AuthService:
    def __init__(self, master_key: SecretStr) -> None:
        self._master = master_key.get_secret_value().encode()
        self._master_id = "master-" + hashlib.sha256(self._master).hexdigest()[:8]

    def authenticate(self, authorization: str | None, api_key: str | None = None) -> Principal:
        """The caller behind `Authorization: Bearer <key>` (or Azure OpenAI's `api-key` header)."""
        key = _bearer(authorization) if authorization else (api_key or "").strip()
        if not key:
            raise AuthenticationError(MISSING_KEY)
        # Constant-time comparison: response timing must not reveal how much of a key matched.
        if hmac.compare_digest(key.encode(), self._master):
            return Principal(key_id=self._master_id, is_master=True)
        raise AuthenticationError(BAD_KEY)


def _bearer(header: str) -> str:
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""
