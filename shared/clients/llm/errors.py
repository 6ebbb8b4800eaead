"""What a failed provider attempt means: for the client (a Cirrus error) and for the router.

Adapters raise `AttemptFailed`, which carries both: the `CirrusError` the client will see if no
retry or fallback saves the call, and the facts the router decides with (the provider's HTTP
status, its Retry-After, whether the prompt was too long or the content refused). The router
unwraps it; nothing outside `shared.clients.llm` sees an `AttemptFailed`.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import orjson
from opentelemetry import trace

from shared.errors import (
    CirrusError,
    InvalidRequestError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)

log = logging.getLogger("cirrus.llm")

CONTEXT_WINDOW = "context_length_exceeded"
CONTENT_POLICY = "content_policy_violation"
# Providers word these differently; LiteLLM recognises the same phrases.
_CONTEXT_PHRASES = re.compile(
    r"context length|context_length_exceeded|context window|prompt is too long|input is too long",
    re.I,
)
_POLICY_PHRASES = re.compile(
    r"content_policy_violation|content management policy|content_filter|safety system", re.I
)


class AttemptFailed(Exception):
    """One provider attempt failed; see the module docstring."""

    def __init__(self, error: CirrusError, status: int | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.status = status  # the provider's HTTP status; None: no answer (timeout, reset)

    @property
    def retry_after(self) -> float | None:
        return self.error.retry_after

    @property
    def kind(self) -> str:
        """`context_window`, `content_policy`, or `other`: which fallback list applies."""
        if self.error.code == CONTEXT_WINDOW:
            return "context_window"
        if self.error.code == CONTENT_POLICY:
            return "content_policy"
        return "other"


def timed_out() -> AttemptFailed:
    return AttemptFailed(UpstreamTimeoutError("The model provider did not answer in time."), 408)


def unreachable() -> AttemptFailed:
    return AttemptFailed(UpstreamError("The model provider returned an error."))


def cut_short() -> AttemptFailed:
    return AttemptFailed(UpstreamError("The model provider ended the stream before the answer was complete."))


def from_response(status: int, body: bytes, headers: Mapping[str, str]) -> AttemptFailed:
    """An error answer (status >= 400) in OpenAI's envelope or Anthropic's as an attempt failure."""
    detail = _error_detail(body)
    message = str(detail.get("message") or "").strip()
    code = str(detail.get("code") or "")
    wait = retry_after_seconds(headers)
    error: CirrusError
    if status == 429:
        error = UpstreamRateLimitError(
            "The model provider is rate limiting requests; retry after the indicated delay.", retry_after=wait
        )
    elif status == 408:
        error = UpstreamTimeoutError("The model provider did not answer in time.")
    elif status in (401, 403, 404):
        # The client's key is fine: Cirrus's provider credentials or deployment name are not.
        log.warning("provider rejected Cirrus's credentials or deployment: HTTP %d", status)
        error = UpstreamError("The model provider rejected the request's deployment or credentials.")
    elif status in (400, 413, 422):
        error = client_error(message, code, detail.get("param"))
    elif status in (503, 529):  # 529: Anthropic's "overloaded"
        error = UpstreamError("The model provider is unavailable.", retry_after=wait)
    else:
        error = UpstreamError("The model provider returned an error.")
    return AttemptFailed(error, status)


def client_error(message: str, code: str = "", param: Any = None) -> InvalidRequestError:
    """A provider's refusal of the request itself: too long, against its policy, or invalid.

    The client gets a message Cirrus writes: a provider's own text can name internal deployments,
    resources and operator hints. The provider's text goes to the log and the current span."""
    text = message or "The model provider rejected the request."
    _record_provider_text(text, code)
    if code == CONTEXT_WINDOW or _CONTEXT_PHRASES.search(text):
        limit = _CONTEXT_LIMIT.search(text)
        said = (
            f"This model's maximum context length is {limit[1]} tokens."
            if limit
            else ("The request is longer than the model's context window.")
        )
        return InvalidRequestError(
            f"{said} Please reduce the length of the messages.", param="messages", code=CONTEXT_WINDOW
        )
    if code in (CONTENT_POLICY, "content_filter") or _POLICY_PHRASES.search(text):
        return InvalidRequestError(
            "The model provider refused the request under its content policy.", code=CONTENT_POLICY
        )
    named = param if isinstance(param, str) and _PARAM.match(param) else None
    return InvalidRequestError(
        "The model provider rejected the request as invalid"
        + (f" (parameter '{named}')" if named else "")
        + ". Its full answer is in the gateway's logs under this request's id.",
        param=named,
    )


_CONTEXT_LIMIT = re.compile(r"maximum context length is (\d{1,9}) tokens", re.I)
_PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\[\]]{0,63}$")
# Credentials a provider may echo (`Incorrect API key provided: sk-...`) never reach the log.
_SECRETS = re.compile(r"\b(?:sk|pk|rk|key|api[_-]?key)[-_][A-Za-z0-9_\-*]{6,}", re.I)
MAX_LOGGED_CHARS = 2000


def _record_provider_text(text: str, code: str) -> None:
    """The provider's own words, for operators: the log (with the request id) and the span."""
    kept = _SECRETS.sub("[redacted]", text)[:MAX_LOGGED_CHARS]
    log.warning("model provider refused the request (%s): %s", code or "invalid", kept)
    trace.get_current_span().add_event("cirrus.provider_error", {"message": kept, "code": code})


def _error_detail(body: bytes) -> dict[str, Any]:
    with contextlib.suppress(orjson.JSONDecodeError, TypeError):
        parsed = orjson.loads(body)
        if isinstance(parsed, dict):
            detail = parsed.get("error", parsed)
            if isinstance(detail, dict):
                return detail
            if isinstance(detail, str):
                return {"message": detail}
    return {}


def stream_error(event: Mapping[str, Any]) -> AttemptFailed:
    """An `{"error": ...}` event inside a stream (OpenAI sends one when it fails mid-answer)."""
    detail = event.get("error")
    message = str(detail.get("message") or "") if isinstance(detail, dict) else str(detail or "")
    log.warning("provider sent an error event mid-stream")
    if message and (_CONTEXT_PHRASES.search(message) or _POLICY_PHRASES.search(message)):
        return AttemptFailed(client_error(message), 400)
    return AttemptFailed(UpstreamError("The model provider returned an error."))


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (delta seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    with contextlib.suppress(TypeError, ValueError):
        if "retry-after-ms" in lowered:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
    value = lowered.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None
