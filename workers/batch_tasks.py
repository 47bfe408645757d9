"""Batch bookkeeping tasks: expanding an input file into jobs, and advancing a batch.

They need the database and Redis but no model, so they run in the background worker.
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from services.core.batches.expand import expand_batch
from services.core.batches.finalize import advance_batch
from services.core.broker import BATCH_EXPAND_TASK, BATCH_PROGRESS_TASK
from services.core.runtime import Runtime


def register_batch_tasks(app: Celery, get_runtime: Callable[[], Runtime]) -> None:
    """Register the batch tasks on the app."""

    @app.task(name=BATCH_EXPAND_TASK, acks_late=True, reject_on_worker_lost=True)
    def expand(batch_id: str) -> None:
        """Create the batch's jobs from its input file (resumable)."""
        expand_batch(get_runtime(), batch_id)

    @app.task(name=BATCH_PROGRESS_TASK, acks_late=True)
    def progress(batch_id: str) -> None:
        """Count the batch's jobs; finalize it when they are all done."""
        advance_batch(get_runtime(), batch_id)
