"""Responses API jobs: a tenant's stored response by its id, and its deletion."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core.db import rows_changed
from services.core.errors import ConflictError, NotFoundError
from services.core.jobs.service import get_job
from services.core.responses.responses_api import job_id_of
from services.core.tables import TERMINAL_STATUSES, Job


def get_response(session: Session, tenant_id: str, response_id: str) -> Job:
    """The tenant's stored response, or a 404 (also for a job that is not a response, and
    for one made with `store: false`)."""
    job_id = job_id_of(response_id)
    missing = NotFoundError(f"no response {response_id[:64]!r}", param="response_id")
    if job_id is None:
        raise missing
    try:
        job = get_job(session, tenant_id, job_id)
    except NotFoundError:
        raise missing from None
    if job.kind != "response" or not (job.response or {}).get("store", True):
        raise missing
    return job


def delete_response(session: Session, job: Job) -> None:
    """Delete a finished response (its images go with the next pruning pass once no job
    uses them); an unfinished one is a 409 (cancel it first), and so is a batch's line (it
    goes with its batch)."""
    if job.batch_id is not None:
        raise ConflictError(
            f"the response is a line of batch {job.batch_id}: it is deleted with its batch",
            param="response_id",
        )
    terminal = [status.value for status in TERMINAL_STATUSES]
    if not rows_changed(session, sa.delete(Job).where(Job.id == job.id, Job.status.in_(terminal))):
        raise ConflictError(
            "the response has not finished: cancel it before deleting it", param="response_id"
        )
