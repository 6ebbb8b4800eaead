"""The errors analysis raises: bad input (400), a bad reply (repairable), a reply still bad after repair."""

from __future__ import annotations

from pydantic import ValidationError

from shared.errors import InvalidRequestError, UpstreamError
from shared.models.validation import param_path


class AnalysisInputError(InvalidRequestError):
    """The data cannot be analysed as given (unreadable file, no numeric columns, ...)."""


class AnalysisOutputError(Exception):
    """The model's reply is not valid JSON or breaks the task's schema or rules; the message says how."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AnalysisFailed(UpstreamError):
    """The reply was still invalid after the one repair attempt; `raw_output` keeps the last reply."""

    code = "invalid_model_output"

    def __init__(self, *, raw_output: str, error: str) -> None:
        super().__init__(f"The model's output was invalid after one repair attempt: {error}")
        self.raw_output = raw_output
        self.error = error


def describe(exc: ValidationError, limit: int = 8) -> str:
    """A pydantic error as one line: `where: what` for the first `limit` problems."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:limit]:
        where = param_path(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
