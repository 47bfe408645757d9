"""Celery tasks: thin wrappers that take a job id and call the pipeline."""

from __future__ import annotations

from celery import Celery

from services.core.broker import INFER_CHUNK_TASK, INFER_TASK
from workers.chunks import run_chunk
from workers.pipeline import run_job
from workers.state import get_state


def register_tasks(app: Celery) -> None:
    """Register vlmq's tasks on the app."""

    @app.task(name=INFER_TASK, acks_late=True, reject_on_worker_lost=True)
    def infer(job_id: str) -> str:
        """Run one job; safe to deliver twice (claiming is idempotent)."""
        state = get_state()
        batcher = state.wait_ready()
        return run_job(state.runtime, batcher, state.leases, job_id)

    @app.task(name=INFER_CHUNK_TASK, acks_late=True, reject_on_worker_lost=True)
    def infer_chunk(job_ids: list[str]) -> str:
        """Run a chunk of batch lines; safe to deliver twice (each line's claim is)."""
        state = get_state()
        batcher = state.wait_ready()
        return run_chunk(state.runtime, batcher, state.leases, job_ids, state.chunk_loading)
