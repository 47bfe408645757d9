"""Answering with a response model."""

from __future__ import annotations

from flask import Response, jsonify

from services.core.responses.base import ResponseModel


def respond(
    body: ResponseModel, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """`body` as a JSON response."""
    response = jsonify(body.dump())
    response.status_code = status
    response.headers.update(headers or {})
    return response
