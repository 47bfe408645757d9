"""`GET /`: a small web playground to try the API from a browser."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

bp = Blueprint("playground", __name__)
STATIC = Path(__file__).with_name("static")
PAGE = STATIC / "index.html"


@bp.get("/")
def index() -> Response:
    """Upload an image, ask, watch the job, see the answer."""
    return Response(PAGE.read_text(), mimetype="text/html")


@bp.get("/favicon.ico")
def favicon() -> Response:
    """vlmq's icon (an SVG: every current browser takes one under this name)."""
    icon = (STATIC / "favicon.svg").read_bytes()
    return Response(icon, mimetype="image/svg+xml", headers={"Cache-Control": "max-age=86400"})
