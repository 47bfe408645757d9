"""`/v1/batches`: the OpenAI Batch API."""

from __future__ import annotations

from flask import Blueprint, Response, request

from services.api.audit import audited
from services.api.context import runtime, tenant_id
from services.api.openapi.declare import IDEMPOTENCY_KEY, LIMIT, after, operation
from services.api.request_parsing import body_as, idempotency_key, page_limit
from services.api.respond import respond
from services.core import idempotency
from services.core.batches import service as batches
from services.core.files import check_expires_after
from services.core.requests.batches import BatchCreateRequest
from services.core.responses.batches import BatchListResponse, BatchResponse
from services.core.responses.webhooks import WebhookDeliveryListResponse
from services.core.tables import Batch
from services.core.webhooks.status import deliveries_of

bp = Blueprint("batches", __name__, url_prefix="/v1/batches")
BATCH_LINKS = {
    "GetBatch": {"operationId": "getBatch", "parameters": {"batch_id": "$response.body#/id"}},
    "CancelBatch": {
        "operationId": "cancelBatch",
        "parameters": {"batch_id": "$response.body#/id"},
    },
}


@bp.post("")
@operation(
    summary="Start a batch from an uploaded input file.",
    tag="openai",
    answers={200: BatchResponse},
    errors=(400, 404, 409, 413, 422, 429),
    body=BatchCreateRequest,
    params=(IDEMPOTENCY_KEY,),
    links=BATCH_LINKS,
)
def create_batch() -> Response:
    """Create a batch from an uploaded JSONL file."""
    rt = runtime()
    body = body_as(BatchCreateRequest)
    policy = body.output_expires_after
    output_life_s = (
        check_expires_after(policy.anchor, policy.seconds, "output_expires_after")
        if policy is not None
        else None
    )
    claim = idempotency.claim_from_header(
        idempotency_key(),
        tenant_id(),
        idempotency.fingerprint("/v1/batches", body.model_dump(mode="json")),
        rt.settings,
    )

    def create() -> Batch:
        return batches.create_batch(
            rt,
            tenant_id(),
            input_file_id=body.input_file_id,
            endpoint=body.endpoint,
            completion_window=body.completion_window,
            metadata=body.metadata,
            webhook=body.webhook,
            output_expires_after_s=output_life_s,
            idempotency=claim,
        )

    def replay(batch_id: str) -> Batch:
        with rt.sessions() as session:
            return batches.get_batch(session, tenant_id(), batch_id)

    batch, replayed = idempotency.submit_once(rt.sessions, claim, create, replay)
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return respond(BatchResponse.of(batch), headers=headers)


@bp.get("/<batch_id>")
@operation(
    summary="A batch and its counts.", tag="openai", answers={200: BatchResponse}, errors=(404,)
)
def get_batch(batch_id: str) -> Response:
    """The batch object, with its request counts."""
    with runtime().sessions() as session:
        return respond(BatchResponse.of(batches.get_batch(session, tenant_id(), batch_id)))


@bp.get("/<batch_id>/webhook_deliveries")
@operation(
    summary="The batch's webhook events.",
    tag="openai",
    answers={200: WebhookDeliveryListResponse},
    errors=(404,),
    operation_id="listBatchWebhookDeliveries",
)
def batch_webhook_deliveries(batch_id: str) -> Response:
    """The batch's own webhook events (its lines have none)."""
    with runtime().sessions() as session:
        batch = batches.get_batch(session, tenant_id(), batch_id)
        return respond(deliveries_of(session, tenant_id(), batch_id=batch.id))


@bp.get("")
@operation(
    summary="The tenant's batches, newest first.",
    tag="openai",
    answers={200: BatchListResponse},
    errors=(400, 404),
    params=(LIMIT, after("batch")),
)
def list_batches() -> Response:
    """The tenant's batches, newest first (`?limit=&after=`)."""
    with runtime().sessions() as session:
        page, has_more = batches.list_batches(
            session, tenant_id(), limit=page_limit(), after=request.args.get("after")
        )
        return respond(BatchListResponse.of(page, has_more))


@bp.post("/<batch_id>/cancel")
@operation(
    summary="Cancel a batch's queued lines; it ends `cancelled`.",
    tag="openai",
    answers={200: BatchResponse},
    errors=(404, 409),
)
def cancel_batch(batch_id: str) -> Response:
    """Cancel the batch's queued requests; it ends `cancelled` when the running ones finish."""
    batch = batches.cancel_batch(runtime(), tenant_id(), batch_id)
    audited("batch.cancelled", target=batch.id)
    return respond(BatchResponse.of(batch))
