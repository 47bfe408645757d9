"""New jobs are stored by one Core insert (`services.core.submit.insert_jobs`): what a caller
set on a job is what its row holds, and a column it left alone gets its default, also when
the jobs of one request differ in what they set (a cache hit is born finished)."""

from __future__ import annotations

import sqlalchemy as sa

from services.core.auth import get_or_create_tenant
from services.core.inputs.prompts import CanonicalRequest, GenerationParams
from services.core.job_spec import JobSpec, SubmitOptions
from services.core.runtime import Runtime
from services.core.submit import insert_jobs, job_values, mark_cache_hit
from services.core.tables import Job, JobStatus


def new_job(runtime: Runtime, tenant_id: str, text: str) -> Job:
    """A new queued job asking `text`, not stored."""
    question = [{"role": "user", "content": [{"type": "text", "text": text}]}]
    spec = JobSpec(CanonicalRequest(question, []), GenerationParams(), SubmitOptions())
    return Job(**job_values(runtime.settings, tenant_id, spec))


def test_jobs_setting_different_columns_are_stored_as_set(runtime: Runtime) -> None:
    with runtime.unit_of_work() as session:
        tenant_id = get_or_create_tenant(session, "insert-jobs").id
    queued = new_job(runtime, tenant_id, "a queued job")
    hit = new_job(runtime, tenant_id, "a cache hit")
    mark_cache_hit(hit, {"output": "red", "result": {"answer": "red"}})
    with runtime.unit_of_work() as session:
        insert_jobs(session, [queued, hit])
    with runtime.sessions() as session:
        rows = {
            job.id: job
            for job in session.scalars(sa.select(Job).where(Job.id.in_([queued.id, hit.id])))
        }
    stored_queued, stored_hit = rows[queued.id], rows[hit.id]
    assert stored_queued.status == JobStatus.QUEUED.value
    assert stored_queued.output is None and stored_queued.completed_at is None
    assert stored_queued.messages == queued.messages
    assert stored_queued.metadata_ == {} and stored_queued.enqueued_at is not None
    assert stored_hit.status == JobStatus.SUCCEEDED.value and stored_hit.cache_hit
    assert stored_hit.output == "red" and stored_hit.result == {"answer": "red"}
    assert stored_hit.completed_at == hit.completed_at and stored_hit.enqueued_at is None
    # Nothing was added to a session: the caller's jobs are as it built them.
    assert sa.inspect(queued).transient and sa.inspect(hit).transient
