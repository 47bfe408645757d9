"""The Flask API: `create_app(settings)` builds the app and everything it talks to."""

from __future__ import annotations

from flask import Flask, Response

from services.api import address_limit, auth, errors, limits, observability
from services.api.audit import bp as audit_bp
from services.api.batches.routes import bp as batches_bp
from services.api.chat.routes import bp as chat_bp
from services.api.files.routes import bp as files_bp
from services.api.health.routes import bp as health_bp
from services.api.jobs.routes import bp as jobs_bp
from services.api.model_cards.routes import bp as model_cards_bp
from services.api.moderations.routes import bp as moderations_bp
from services.api.openapi.routes import bp as openapi_bp
from services.api.playground.routes import bp as playground_bp
from services.api.presets.routes import bp as presets_bp
from services.api.responses.routes import bp as responses_bp
from services.api.usage.routes import bp as usage_bp
from services.api.webhooks.endpoints import bp as webhook_endpoints_bp
from services.api.webhooks.routes import bp as webhooks_bp
from services.core.bootstrap import create_runtime
from services.core.config import Settings
from services.core.logs import configure_logging


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API app for `settings` (read from the environment when not given)."""
    settings = settings or Settings()
    configure_logging(settings)
    app = Flask(__name__)
    # Werkzeug refuses larger bodies with 413 before the JSON is parsed.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_body_bytes
    app.extensions["vlmq"] = create_runtime(settings)
    # First: every later handler's log lines carry the request id.
    observability.register(app)
    errors.register(app)
    address_limit.register(app, settings)
    auth.register(app)
    # After auth: the limit counts per tenant.
    limits.register(app, settings)
    resources = (
        jobs_bp,
        chat_bp,
        responses_bp,
        moderations_bp,
        files_bp,
        batches_bp,
        webhooks_bp,
        webhook_endpoints_bp,
        model_cards_bp,
        presets_bp,
        usage_bp,
        audit_bp,
    )
    for blueprint in (*resources, health_bp, playground_bp, openapi_bp):
        app.register_blueprint(blueprint)
    app.after_request(security_headers)
    return app


def security_headers(response: Response) -> Response:
    """What every answer tells the browser: take content types as sent, and send no
    `Referer` (a page's address can carry a job id) to where a link leads."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response
