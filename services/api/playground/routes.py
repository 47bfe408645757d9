"""`GET /`: a small web playground to try the API from a browser."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

bp = Blueprint("playground", __name__)
PAGE = Path(__file__).with_name("static") / "index.html"


@bp.get("/")
def index() -> Response:
    """Upload an image, ask, watch the job, see the answer."""
    return Response(PAGE.read_text(), mimetype="text/html")
