"""One mapping from errors to statuses and the OpenAI envelope."""

import logging

import pytest

from shared import errors


@pytest.mark.parametrize(
    ("err", "status", "type_", "code"),
    [
        (errors.InvalidRequestError("bad", param="messages"), 400, "invalid_request_error", None),
        (errors.PayloadTooLargeError("big"), 413, "invalid_request_error", "request_too_large"),
        (errors.AuthenticationError("who"), 401, "invalid_request_error", "invalid_api_key"),
        (errors.PermissionDeniedError("no"), 403, "invalid_request_error", "permission_denied"),
        (errors.ModelNotFoundError("gpt-9"), 404, "invalid_request_error", "model_not_found"),
        (errors.RateLimitError("slow"), 429, "requests", "rate_limit_exceeded"),
        (errors.UpstreamRateLimitError("slow"), 429, "requests", "rate_limit_exceeded"),
        (errors.UpstreamError("down"), 502, "api_error", "upstream_error"),
        (errors.UpstreamTimeoutError("late"), 504, "api_error", "upstream_timeout"),
        (errors.ServiceUnavailableError("misconfigured"), 503, "server_error", "service_unavailable"),
    ],
)
def test_status_type_and_code(err, status, type_, code):
    assert err.status == status
    assert errors.error_body(err) == {
        "error": {"message": err.message, "type": type_, "param": err.param, "code": code}
    }


@pytest.mark.parametrize(
    ("err", "type_"),
    [
        (errors.InvalidRequestError("bad", param="messages"), "invalid_request_error"),
        (errors.PayloadTooLargeError("big"), "request_too_large"),
        (errors.AuthenticationError("who"), "authentication_error"),
        (errors.PermissionDeniedError("no"), "permission_error"),
        (errors.ModelNotFoundError("gpt-9"), "not_found_error"),
        (errors.NotFoundError("gone"), "not_found_error"),
        (errors.ConflictError("ended"), "invalid_request_error"),
        (errors.RateLimitError("slow"), "rate_limit_error"),
        (errors.InsufficientQuotaError("spent"), "rate_limit_error"),
        (errors.UpstreamRateLimitError("slow"), "rate_limit_error"),
        (errors.UpstreamError("down"), "api_error"),
        (errors.UpstreamTimeoutError("late"), "timeout_error"),
        (errors.ServiceUnavailableError("misconfigured"), "overloaded_error"),
        (errors.CirrusError("unexpected"), "api_error"),
    ],
)
def test_anthropic_envelope_names_the_type_by_status(err, type_):
    assert errors.anthropic_error_body(err) == {
        "type": "error",
        "error": {"type": type_, "message": err.message},
    }


def test_model_not_found_names_the_model_and_param():
    body = errors.error_body(errors.ModelNotFoundError("gpt-9"))["error"]
    assert body["message"] == "The model `gpt-9` does not exist or you do not have access to it."
    assert body["param"] == "model"


def test_instance_code_overrides_class_code():
    err = errors.InvalidRequestError("too long", code="context_length_exceeded")
    assert errors.error_body(err)["error"]["code"] == "context_length_exceeded"
    assert errors.InvalidRequestError("x").code is None


@pytest.mark.parametrize(("seconds", "header"), [(2, "2"), (0.2, "1"), (1.5, "2"), (0, "0")])
def test_retry_after_is_whole_seconds_rounded_up(seconds, header):
    assert errors.RateLimitError("slow", retry_after=seconds).headers() == {"retry-after": header}


def test_no_retry_after_no_header():
    assert errors.UpstreamError("x").headers() == {}


def test_unexpected_exception_is_logged_once_and_hidden(caplog):
    with caplog.at_level(logging.ERROR, logger="cirrus.errors"):
        err = errors.as_cirrus_error(KeyError("internal detail"), "req_1")
    assert err.status == 500
    assert "internal detail" not in err.message
    assert "req_1" in err.message
    assert len(caplog.records) == 1
    assert caplog.records[0].exc_info is not None


def test_cirrus_error_passes_through_unchanged():
    err = errors.AuthenticationError("x")
    assert errors.as_cirrus_error(err) is err
