"""`GET /v1/webhooks/default/secret`: the secret that signs the tenant's webhooks, and
`POST /v1/webhooks/default/secret/rotate`, which replaces it."""

from __future__ import annotations

from flask import Blueprint, Response

from services.api.audit import audited
from services.api.context import runtime, tenant_id
from services.api.openapi.declare import operation
from services.api.respond import respond
from services.core.responses.webhooks import WebhookSecretResponse
from services.core.webhooks.signing import rotate_secret, tenant_secret

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")


@bp.get("/default/secret")
@operation(
    summary="The tenant's Standard Webhooks secret, to verify `webhook-signature`.",
    tag="webhooks",
    answers={200: WebhookSecretResponse},
    operation_id="getWebhookSecret",
)
def get_secret() -> Response:
    """The tenant's Standard Webhooks secret (`whsec_...`, created on first use), in
    Replicate's shape `{"key": ...}`, for receivers to verify `webhook-signature`."""
    return respond(WebhookSecretResponse(key=tenant_secret(runtime(), tenant_id())))


@bp.post("/default/secret/rotate")
@operation(
    summary="Replace the tenant's webhook secret; the old one signs beside it for a while.",
    tag="webhooks",
    answers={200: WebhookSecretResponse},
    operation_id="rotateWebhookSecret",
)
def rotate() -> Response:
    """A new Standard Webhooks secret for the tenant, in the shape of `GET`. Until
    `VLMQ_WEBHOOK_SECRET_OVERLAP_S` (24 h) has passed, every webhook carries a signature by
    each secret in `webhook-signature`, so receivers switch to the new one at their pace."""
    secret = rotate_secret(runtime(), tenant_id())
    audited("webhook_secret.rotated")
    return respond(WebhookSecretResponse(key=secret))
