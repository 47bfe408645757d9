"""`GET /`: a small web playground to try the API from a browser."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort

from services.api.openapi.declare import operation, text

bp = Blueprint("playground", __name__)
STATIC = Path(__file__).with_name("static")
PAGE = STATIC / "index.html"


@bp.get("/")
@operation(
    summary="The playground page.",
    tag="operations",
    answers={200: text("text/html")},
    public=True,
    operation_id="playground",
)
def index() -> Response:
    """Pick, drop, paste or link an image, ask, and watch the answer stream in."""
    return Response(PAGE.read_text(), mimetype="text/html")


@bp.get("/favicon.ico")
def favicon() -> Response:
    """vlmq's icon (an SVG: every current browser takes one under this name)."""
    icon = (STATIC / "favicon.svg").read_bytes()
    return Response(icon, mimetype="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


@bp.get("/playground/samples/<name>.png")
def sample(name: str) -> Response:
    """One of the playground's sample images."""
    path = STATIC / "samples" / f"{name}.png"
    if not name.replace("-", "").isalnum() or not path.is_file():
        abort(404)
    return Response(path.read_bytes(), mimetype="image/png")
