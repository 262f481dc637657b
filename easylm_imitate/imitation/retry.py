"""What a failed chat request means (retry? how long to wait? give up on the whole run?)."""

from __future__ import annotations

import dataclasses
import email.utils
import random
import time

import openai


class MalformedResponse(ValueError):
    """The server answered 200 but the body is not a usable chat completion."""


class FatalAPIError(RuntimeError):
    """An error no request can recover from (bad API key, unknown model or endpoint)."""


@dataclasses.dataclass(frozen=True)
class Failure:
    """A classified failure of one attempt."""

    kind: str  # rate_limit, server_error, timeout, connection, malformed, bad_request, auth, not_found
    message: str
    retryable: bool
    fatal: bool = False
    retry_after: float | None = None


def parse_retry_after(headers) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify(exc: BaseException) -> Failure:
    """Classify an exception raised by one chat.completions.create call; unknown ones are re-raised."""
    if isinstance(exc, openai.APITimeoutError):
        return Failure("timeout", "request timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return Failure("connection", f"connection error: {type(cause).__name__}: {cause}", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = f"HTTP {status}: {exc.message}"
        if status == 429:
            return Failure("rate_limit", message, True, retry_after=parse_retry_after(exc.response.headers))
        if status >= 500 or status in (408, 409):
            return Failure("server_error", message, True, retry_after=parse_retry_after(exc.response.headers))
        if status in (401, 403):
            return Failure("auth", message, retryable=False, fatal=True)
        if status == 404:
            return Failure("not_found", message, retryable=False, fatal=True)
        return Failure("bad_request", message, retryable=False)
    if isinstance(exc, (openai.APIResponseValidationError, MalformedResponse, ValueError)):
        return Failure("malformed", f"malformed response: {exc}", retryable=True)
    raise exc


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d] for d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2 ** attempt))
    return rng.uniform(d / 2, d)
