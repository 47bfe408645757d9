"""What follows a job's transitions: waiters are woken, webhooks scheduled, batches advanced.

The job service calls these after each transition has committed. Each consequence lives in
its own module; none may fail the transition (the database already holds the truth).
"""

from __future__ import annotations

import logging

import redis

from services.core import events
from services.core.runtime import Runtime

log = logging.getLogger(__name__)


def job_started(runtime: Runtime, job_id: str) -> None:
    """A job's first attempt began running."""
    from services.core import webhooks  # the consequences import the job service in turn

    try:
        webhooks.on_job_event(runtime, job_id, "start")
    except Exception:
        log.exception("event=webhook_schedule_failed job_id=%s", job_id)


def job_finished(
    runtime: Runtime, job_id: str, *, has_webhook: bool = True, in_batch: bool = True
) -> None:
    """A job reached a terminal state.

    A caller that knows the job has no webhook or no batch says so, and saves the reads
    that would find out.
    """
    from services.core import batches, webhooks  # they import the job service in turn

    try:
        events.publish_job_done(runtime.redis, job_id)
    except redis.RedisError:
        # A lost notification only delays waiters: they re-check the database.
        log.warning("event=publish_failed job_id=%s", job_id)
    try:
        if has_webhook:
            webhooks.on_job_event(runtime, job_id, "completed")
    except Exception:
        log.exception("event=webhook_schedule_failed job_id=%s", job_id)
    try:
        if in_batch:
            batches.on_job_finished(runtime, job_id)
    except Exception:
        log.exception("event=batch_progress_failed job_id=%s", job_id)
