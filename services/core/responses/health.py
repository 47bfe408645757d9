"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from services.core.responses.base import ResponseModel


class HealthResponse(ResponseModel):
    """The process is up."""

    status: Literal["ok"]


class ReadinessResponse(ResponseModel):
    """Whether the database, Redis and a worker answer, and why not."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, bool]
    reasons: dict[str, str]

    @classmethod
    def of(cls, reasons: dict[str, str]) -> ReadinessResponse:
        """Ready when nothing is down; `reasons` says what is and why."""
        checks = {name: name not in reasons for name in ("database", "redis", "worker")}
        return cls(status="not_ready" if reasons else "ready", checks=checks, reasons=reasons)
