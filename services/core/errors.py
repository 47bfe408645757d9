"""The errors vlmq reports to clients; each knows its HTTP status and error type.

The API turns any `VlmqError` into the one JSON error shape
`{"error": {"type", "code", "message", "param"}}` (`responses.errors.ErrorResponse`).
"""

from __future__ import annotations

from typing import Any

import redis
import sqlalchemy as sa
from kombu.exceptions import OperationalError as BrokerOperationalError


class VlmqError(Exception):
    """Base of every error vlmq reports to a client."""

    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.param = param
        self.headers = headers or {}


class InvalidRequestError(VlmqError):
    """400: the request is malformed (bad JSON, missing field, bad value)."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationError(VlmqError):
    """401: missing or wrong API key."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFoundError(VlmqError):
    """404: unknown id, or an object of another tenant."""

    status = 404
    type = "not_found_error"
    code = "not_found"


class ConflictError(VlmqError):
    """409: the request conflicts with the current state of an object."""

    status = 409
    type = "conflict_error"
    code = "conflict"


class PayloadTooLargeError(VlmqError):
    """413: the body, an image's bytes, or its pixel count is over the limit."""

    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class UnsupportedImageError(VlmqError):
    """415: an image in a format vlmq does not accept."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_image_format"


class UndecodableImageError(VlmqError):
    """422: data that claims to be an image but cannot be decoded as one."""

    status = 422
    type = "invalid_request_error"
    code = "invalid_image"


class TooManyRequestsError(VlmqError):
    """429: the tenant is over its request rate or its cap on unfinished jobs."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int = 1, **kwargs: Any) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)}, **kwargs)


class QuotaExceededError(VlmqError):
    """429: the tenant keeps as much as its quota allows; retrying does not help until it
    deletes something or its data expires (OpenAI's `insufficient_quota`)."""

    status = 429
    type = "insufficient_quota"
    code = "storage_quota_exceeded"


class ServiceUnavailableError(VlmqError):
    """503: a dependency (database, Redis, workers) is down."""

    status = 503
    type = "service_unavailable_error"
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5, **kwargs: Any) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)}, **kwargs)


class SyncTimeoutError(VlmqError):
    """504: a synchronous call waited longer than its limit; the job goes on."""

    status = 504
    type = "timeout_error"
    code = "timeout"


class JobFailedError(VlmqError):
    """500: the job behind a synchronous call failed in the worker."""

    status = 500
    type = "server_error"
    code = "job_failed"


# Exceptions that mean a dependency is unreachable, not that the request is wrong.
OUTAGES: dict[type[BaseException], str] = {
    sa.exc.OperationalError: "the database is unavailable",
    sa.exc.InterfaceError: "the database is unavailable",
    sa.exc.TimeoutError: "the database is unavailable (no free connection)",
    redis.exceptions.ConnectionError: "Redis is unavailable",
    redis.exceptions.TimeoutError: "Redis is unavailable",
    BrokerOperationalError: "the queue (Redis) is unavailable",
}


def as_outage(exc: BaseException) -> ServiceUnavailableError | None:
    """The 503 for an exception that says a dependency is down; None for any other."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return ServiceUnavailableError("the database is unavailable")
    for kind, message in OUTAGES.items():
        if isinstance(exc, kind):
            return ServiceUnavailableError(message)
    return None
