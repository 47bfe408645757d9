"""One error blueprint: every failure leaves the API in the one JSON error shape."""

from __future__ import annotations

import structlog
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from services.api.audit import signal_refusal
from services.core.errors import VlmqError, as_outage
from services.core.responses.errors import ErrorResponse

log = structlog.get_logger(__name__)

HTTP_ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "payload_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
}


def error_response(
    status: int, body: ErrorResponse, headers: dict[str, str] | None = None
) -> Response:
    """A JSON error response."""
    response = jsonify(body.dump())
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register(app: Flask) -> None:
    """Install the handlers that turn exceptions into JSON errors."""

    @app.errorhandler(VlmqError)
    def handle_vlmq_error(error: VlmqError) -> Response:
        signal_refusal(error.status, error.code)
        return error_response(error.status, ErrorResponse.of(error), error.headers)

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException) -> Response:
        status = error.code or 500
        type_, code = HTTP_ERROR_TYPES.get(status, ("invalid_request_error", "http_error"))
        message = error.description or error.name
        return error_response(status, ErrorResponse.build(type_, code, message))

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        outage = as_outage(error)
        if outage is not None:
            log.warning("dependency_down", error=repr(error))
            return error_response(outage.status, ErrorResponse.of(outage), outage.headers)
        log.exception("unhandled_error")
        body = ErrorResponse.build("server_error", "internal_error", "internal server error")
        return error_response(500, body)
