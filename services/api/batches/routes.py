"""`/v1/batches`: the OpenAI Batch API."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from services.api.batches.protocol import BatchCreateRequest
from services.api.context import runtime, tenant_id
from services.api.request_parsing import json_object, page_limit, validate
from services.core import idempotency
from services.core.batches import service as batches
from services.core.files import check_expires_after
from services.core.models import Batch
from services.core.serialize import batch_response, openai_page
from services.core.webhooks.status import deliveries_of

bp = Blueprint("batches", __name__, url_prefix="/v1/batches")


@bp.post("")
def create_batch() -> Response:
    """Create a batch from an uploaded JSONL file."""
    rt = runtime()
    body = validate(BatchCreateRequest, json_object())
    policy = body.output_expires_after
    output_life_s = (
        check_expires_after(policy.anchor, policy.seconds, "output_expires_after")
        if policy is not None
        else None
    )
    claim = idempotency.claim_from_header(
        request.headers.get(idempotency.HEADER),
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
    response = jsonify(batch_response(batch))
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.get("/<batch_id>")
def retrieve_batch(batch_id: str) -> Response:
    """The batch object, with its request counts."""
    with runtime().sessions() as session:
        return jsonify(batch_response(batches.get_batch(session, tenant_id(), batch_id)))


@bp.get("/<batch_id>/webhook_deliveries")
def batch_webhook_deliveries(batch_id: str) -> Response:
    """The batch's own webhook events (its lines have none)."""
    with runtime().sessions() as session:
        batch = batches.get_batch(session, tenant_id(), batch_id)
        data = deliveries_of(session, tenant_id(), batch_id=batch.id)
    return jsonify({"object": "list", "data": data})


@bp.get("")
def list_batches() -> Response:
    """The tenant's batches, newest first (`?limit=&after=`)."""
    with runtime().sessions() as session:
        page, has_more = batches.list_batches(
            session, tenant_id(), limit=page_limit(), after=request.args.get("after")
        )
        data = [batch_response(batch) for batch in page]
    return jsonify(openai_page(data, has_more))


@bp.post("/<batch_id>/cancel")
def cancel_batch(batch_id: str) -> Response:
    """Cancel the batch's queued requests; it ends `cancelled` when the running ones finish."""
    return jsonify(batch_response(batches.cancel_batch(runtime(), tenant_id(), batch_id)))
