"""`/openapi.json` and `/docs`: the document, and Swagger UI served by vlmq itself (its
assets come from the `flask-openapi3-swagger` package, so the page works offline)."""

from __future__ import annotations

from importlib import metadata, resources
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify

from services.api.openapi.document import build_document

bp = Blueprint("openapi", __name__)
ASSETS = resources.files("flask_openapi3_swagger") / "templates" / "swagger"
ASSET_TYPES = {
    "swagger-ui-bundle.js": ("js", "text/javascript"),
    "swagger-ui-standalone-preset.js": ("js", "text/javascript"),
    "swagger-ui.css": ("css", "text/css"),
}
DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>vlmq API</title>
  <link rel="icon" href="/favicon.ico">
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="docs"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#docs", deepLinking: true,
                                 persistAuthorization: true});
  </script>
</body>
</html>
"""


def document() -> dict[str, Any]:
    """The document, built once per app."""
    built = current_app.extensions.get("vlmq_openapi")
    if built is None:
        built = build_document(current_app, metadata.version("vlmq"))
        current_app.extensions["vlmq_openapi"] = built
    return built


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3.1 document of every route."""
    return jsonify(document())


@bp.get("/docs")
def docs() -> Response:
    """Swagger UI on the document."""
    return Response(DOCS_PAGE, mimetype="text/html")


@bp.get("/docs/assets/<name>")
def docs_asset(name: str) -> Response:
    """One of Swagger UI's files."""
    if name not in ASSET_TYPES:
        abort(404)
    folder, mime = ASSET_TYPES[name]
    body = (ASSETS / folder / name).read_bytes()
    return Response(body, mimetype=mime, headers={"Cache-Control": "public, max-age=86400"})
