"""`/v1/webhook_endpoints`: the tenant's URLs subscribed to OpenAI-shaped events
(`response.completed`, `batch.completed`, …), created, listed, read and deleted as
Stripe's API names them."""

from __future__ import annotations

from flask import Blueprint, Response

from services.api.audit import audited
from services.api.context import runtime, tenant_id
from services.api.openapi.declare import operation
from services.api.request_parsing import body_as
from services.api.respond import respond
from services.core.requests.webhook_endpoints import WebhookEndpointRequest
from services.core.responses.webhooks import (
    DeletedWebhookEndpoint,
    WebhookEndpointListResponse,
    WebhookEndpointResponse,
)
from services.core.webhooks.endpoints import (
    create_endpoint,
    delete_endpoint,
    get_endpoint,
    list_endpoints,
)

bp = Blueprint("webhook_endpoints", __name__, url_prefix="/v1/webhook_endpoints")


@bp.post("")
@operation(
    summary="Subscribe a URL to events; the answer shows its signing secret, once.",
    tag="webhooks",
    answers={200: WebhookEndpointResponse},
    errors=(400, 429),
    body=WebhookEndpointRequest,
    operation_id="createWebhookEndpoint",
)
def create() -> Response:
    """A new endpoint with a `whsec_` secret of its own (stored sealed, never shown again)."""
    body = body_as(WebhookEndpointRequest)
    endpoint, secret = create_endpoint(runtime(), tenant_id(), body.url, body.events, body.name)
    audited(
        "webhook_endpoint.created", target=endpoint.id, details={"events": endpoint.enabled_events}
    )
    return respond(WebhookEndpointResponse.of(endpoint, secret))


@bp.get("")
@operation(
    summary="The tenant's webhook endpoints, newest first.",
    tag="webhooks",
    answers={200: WebhookEndpointListResponse},
    operation_id="listWebhookEndpoints",
)
def list_all() -> Response:
    """Every endpoint of the tenant (without secrets)."""
    with runtime().sessions() as session:
        return respond(WebhookEndpointListResponse.of(list_endpoints(session, tenant_id())))


@bp.get("/<endpoint_id>")
@operation(
    summary="One webhook endpoint.",
    tag="webhooks",
    answers={200: WebhookEndpointResponse},
    errors=(404,),
    operation_id="getWebhookEndpoint",
)
def retrieve(endpoint_id: str) -> Response:
    """One endpoint of the tenant (without its secret)."""
    with runtime().sessions() as session:
        return respond(WebhookEndpointResponse.of(get_endpoint(session, tenant_id(), endpoint_id)))


@bp.delete("/<endpoint_id>")
@operation(
    summary="Delete a webhook endpoint: its events stop.",
    tag="webhooks",
    answers={200: DeletedWebhookEndpoint},
    errors=(404,),
    operation_id="deleteWebhookEndpoint",
)
def delete(endpoint_id: str) -> Response:
    """Delete the endpoint; events not yet delivered to it are not sent."""
    with runtime().unit_of_work() as session:
        endpoint = delete_endpoint(session, tenant_id(), endpoint_id)
        audited("webhook_endpoint.deleted", target=endpoint.id, session=session)
    return respond(
        DeletedWebhookEndpoint(id=endpoint.id, object="webhook_endpoint.deleted", deleted=True)
    )
