"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.api.context import runtime
from services.core.heartbeats import live_model_workers

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when the database and Redis answer and a worker has its model loaded."""
    rt = runtime()
    checks: dict[str, bool] = {}
    try:
        with rt.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        checks["database"] = True
    except Exception:
        checks["database"] = False
    try:
        checks["redis"] = bool(rt.redis.ping())
    except Exception:
        checks["redis"] = False
    try:
        checks["worker"] = bool(live_model_workers(rt.redis, rt.settings.model_id))
    except Exception:
        checks["worker"] = False
    ready = all(checks.values())
    return jsonify(
        {"status": "ready" if ready else "not_ready", "checks": checks}
    ), 200 if ready else 503


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
