"""Celery tasks: thin wrappers that run the next unit of work (see `workers.dispatch`)."""

from __future__ import annotations

from typing import Any

from celery import Celery

from services.core.broker import INFER_CHUNK_TASK, INFER_TASK
from workers.dispatch import run_next
from workers.state import get_state


def register_tasks(app: Celery) -> None:
    """Register vlmq's tasks on the app."""

    @app.task(name=INFER_TASK, acks_late=True, reject_on_worker_lost=True)
    def infer(*_hint: Any) -> str:
        """Run the fairest unit of work waiting; safe to deliver twice (claiming is
        idempotent, and a message that finds nothing to do is only acknowledged)."""
        return run_next(get_state())

    @app.task(name=INFER_CHUNK_TASK, acks_late=True, reject_on_worker_lost=True)
    def infer_chunk(*_hint: Any) -> str:
        """A message of an earlier version, sent for a chunk of batch lines: the same."""
        return run_next(get_state())
