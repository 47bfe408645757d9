"""Reading HTTP requests: JSON bodies as request models, `?limit=`, `Prefer`, headers."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel

from services.api.context import runtime
from services.core import idempotency
from services.core.errors import InvalidRequestError
from services.core.requests.base import parse

RequestT = TypeVar("RequestT", bound=BaseModel)
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
PREFER_WAIT = re.compile(r"\bwait\s*=\s*(\d+(?:\.\d+)?)")


def json_object() -> dict[str, Any]:
    """The body as a JSON object, or a 400 saying what is wrong with it."""
    if not request.is_json:
        raise InvalidRequestError("body must be JSON (Content-Type: application/json)")
    try:
        body = request.get_json(silent=True)
    except RecursionError as exc:  # nesting deeper than the parser's recursion limit
        raise InvalidRequestError("body is nested too deeply") from exc
    if body is None:
        raise InvalidRequestError("body is not valid JSON")
    if not isinstance(body, dict):
        raise InvalidRequestError("body must be a JSON object")
    # JSON may escape a lone UTF-16 surrogate ("\ud800"), which is no text: nothing
    # downstream (tokenizer, database, cache key) can encode it.
    if SURROGATE_ESCAPE.search(request.get_data(cache=True)):
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError as exc:
            raise InvalidRequestError("body contains a lone UTF-16 surrogate escape") from exc
    return body


def body_as(model: type[RequestT], body: dict[str, Any] | None = None) -> RequestT:
    """The JSON body (or `body`, read from a form) as `model`, or a 400."""
    return parse(model, json_object() if body is None else body, runtime().settings)


def idempotency_key() -> str | None:
    """The request's `Idempotency-Key` header, if any."""
    return request.headers.get(idempotency.HEADER)


def prefer_wait_s(limit_s: float) -> float:
    """Seconds asked for by `Prefer: wait=N`, capped at `limit_s`; 0 without the header."""
    match = PREFER_WAIT.search(request.headers.get("Prefer", ""))
    return min(float(match.group(1)), limit_s) if match else 0.0


def page_limit(default: int = 20) -> int:
    """The `?limit=` of a list request (a positive integer), or a 400."""
    value = request.args.get("limit", str(default))
    # ASCII digits only: `isdigit` also admits "²", which int() refuses.
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise InvalidRequestError("limit must be a positive integer", param="limit")
    return int(value)
