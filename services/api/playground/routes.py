"""`GET /`: a small web playground to try the API from a browser."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from flask import Blueprint, Response, abort

from services.api.openapi.declare import operation, text

bp = Blueprint("playground", __name__)
STATIC = Path(__file__).with_name("static")
PAGE = STATIC / "index.html"


def inline_hashes(page: str, tag: str) -> str:
    """The CSP sources (`'sha256-...'`) of the page's inline `<tag>` blocks."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()}'"
        for block in blocks
    )


def content_security_policy(page: str) -> str:
    """The page's policy: its own inline script and style (by hash) and nothing else runs;
    it talks to this origin alone; images may come from anywhere the user links."""
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {inline_hashes(page, 'script')}",
            f"style-src {inline_hashes(page, 'style')}",
            "img-src 'self' data: blob: https: http:",
            "connect-src 'self' data: blob:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


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
    page = PAGE.read_text()
    return Response(
        page,
        mimetype="text/html",
        headers={"Content-Security-Policy": content_security_policy(page)},
    )


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
