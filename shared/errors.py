"""Cirrus's errors and the one place that turns any exception into an error envelope: OpenAI's,
or Anthropic's on the Anthropic routes (`/v1/messages`).

    CirrusError                        500 server_error            (base; unexpected faults too)
    ├── InvalidRequestError            400 invalid_request_error   names the offending `param`
    │   └── PayloadTooLargeError       413 invalid_request_error
    ├── AuthenticationError            401 invalid_api_key
    ├── PermissionDeniedError          403 permission_denied
    ├── NotFoundError                  404 not_found
    │   └── ModelNotFoundError         404 model_not_found
    ├── ConflictError                  409 conflict                (store: id already exists)
    ├── PreconditionFailedError        412 precondition_failed     (store: ETag changed)
    ├── RateLimitError                 429 rate_limit_exceeded     with Retry-After
    │   └── TokenRateLimitError        429 rate_limit_exceeded     (type `tokens`)
    ├── InsufficientQuotaError         429 insufficient_quota      the key's budget is spent
    ├── ServiceUnavailableError        503 service_unavailable     (misconfigured or dependency down)
    └── UpstreamError                  502 upstream_error          (the provider failed)
        ├── UpstreamRateLimitError     429 rate_limit_exceeded     the provider's Retry-After
        └── UpstreamTimeoutError       504 upstream_timeout

Anthropic's envelope, `{"type": "error", "error": {"type", "message"}}`, names the kind of error by
HTTP status (`anthropic_error_body`): 400 invalid_request_error, 401 authentication_error, 403
permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 503
overloaded_error, 504 timeout_error, any other 5xx api_error (and any other 4xx
invalid_request_error). The status itself is Cirrus's, the same as on the OpenAI routes.

Messages never contain keys, prompts or provider URLs: they are written for the client.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar

log = logging.getLogger("cirrus.errors")


class CirrusError(Exception):
    """Base of every error Cirrus reports to a client; see the module docstring for the tree."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.extra_headers: dict[str, str] = {}  # sent with the error, e.g. rate-limit figures
        if code is not None:
            self.code = code  # type: ignore[misc]  # an instance may refine its class's code

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return dict(self.extra_headers)
        # Retry-After takes whole seconds; round up so a client never retries too early.
        return {**self.extra_headers, "retry-after": str(max(0, math.ceil(self.retry_after)))}


class InvalidRequestError(CirrusError):
    status = 400
    type = "invalid_request_error"


class PayloadTooLargeError(InvalidRequestError):
    status = 413
    code = "request_too_large"


class AuthenticationError(CirrusError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(CirrusError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class NotFoundError(CirrusError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.", param="model"
        )


class ConflictError(CirrusError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PreconditionFailedError(CirrusError):
    status = 412
    type = "invalid_request_error"
    code = "precondition_failed"


class RateLimitError(CirrusError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class TokenRateLimitError(RateLimitError):
    type = "tokens"


class InsufficientQuotaError(CirrusError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class ServiceUnavailableError(CirrusError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class UpstreamError(CirrusError):
    status = 502
    type = "api_error"
    code = "upstream_error"


class UpstreamRateLimitError(UpstreamError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"


def error_body(err: CirrusError) -> dict[str, Any]:
    """The OpenAI error envelope for `err`."""
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


# Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}

# Renders an error as a response body: `error_body` (OpenAI's) or `anthropic_error_body`.
Envelope = Callable[[CirrusError], dict[str, Any]]


def anthropic_error_body(err: CirrusError) -> dict[str, Any]:
    """Anthropic's error envelope for `err`, its type chosen by `err.status`."""
    kind = _ANTHROPIC_TYPES.get(err.status) or ("api_error" if err.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def as_cirrus_error(exc: BaseException, request_id: str | None = None) -> CirrusError:
    """`exc` itself if it is a CirrusError, else a generic 500 that hides the internals.

    The unexpected exception is logged with its traceback here, once, and never sent to the client.
    """
    if isinstance(exc, CirrusError):
        return exc
    log.error("unhandled error (request id %s)", request_id, exc_info=exc)
    suffix = f" (request id {request_id})" if request_id else ""
    return CirrusError(
        "The server had an error while processing your request. Sorry about that! "
        f"You can retry your request, or contact us if the error persists{suffix}."
    )
