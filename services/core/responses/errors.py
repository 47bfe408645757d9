"""The one error body of every non-2xx answer."""

from __future__ import annotations

from typing import Any

from services.core.errors import VlmqError
from services.core.responses.base import ResponseModel


class ErrorDetail(ResponseModel):
    """What went wrong: OpenAI's error fields."""

    type: str
    code: str
    message: str
    param: str | None = None


class ErrorResponse(ResponseModel):
    """`{"error": {"type", "code", "message", "param"}}`."""

    error: ErrorDetail

    @classmethod
    def of(cls, error: VlmqError) -> ErrorResponse:
        """The body of a `VlmqError`."""
        return cls.build(error.type, error.code, error.message, error.param)

    @classmethod
    def build(cls, type_: str, code: str, message: str, param: str | None = None) -> ErrorResponse:
        """The body of an error that is not a `VlmqError` (an HTTP error, a crash)."""
        return cls(error=ErrorDetail(type=type_, code=code, message=message, param=param))

    def dump(self) -> dict[str, Any]:
        """The body, `param` included when it is null (the shape has all four fields)."""
        return self.model_dump(mode="json")
