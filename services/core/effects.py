"""What follows each outbox event once its transaction has committed: waiters are woken,
webhooks scheduled, batches advanced.

`bootstrap.create_runtime` wires `dispatch` into every unit of work. No consequence may
fail the change that caused it (the database already holds the truth): each is tried on
its own and a failure is logged.
"""

from __future__ import annotations

import logging

import redis

from services.core import notify, outbox
from services.core.batches.finalize import schedule_progress_check
from services.core.runtime import Runtime
from services.core.webhooks.scheduling import schedule_batch_event, schedule_job_event

log = logging.getLogger(__name__)


def dispatch(runtime: Runtime, events: list[outbox.Event]) -> None:
    """Carry out the consequences of committed events, in order."""
    for event in events:
        match event:
            case outbox.JobStarted(job_id):
                job_started(runtime, job_id)
            case outbox.JobFinished(job_id, has_webhook, in_batch):
                job_finished(runtime, job_id, has_webhook=has_webhook, in_batch=in_batch)
            case outbox.BatchFinished(batch_id):
                batch_finished(runtime, batch_id)


def job_started(runtime: Runtime, job_id: str) -> None:
    """A job's first attempt began running: its `start` webhook, if it asked for one."""
    try:
        schedule_job_event(runtime, job_id, "start")
    except Exception:
        log.exception("event=webhook_schedule_failed job_id=%s", job_id)


def job_finished(runtime: Runtime, job_id: str, *, has_webhook: bool, in_batch: bool) -> None:
    """A job reached a terminal state: wake its waiters, schedule its `completed` webhook,
    and schedule a progress check of its batch."""
    try:
        notify.publish_job_done(runtime.redis, job_id)
    except redis.RedisError:
        # A lost notification only delays waiters: they re-check the database.
        log.warning("event=publish_failed job_id=%s", job_id)
    try:
        if has_webhook:
            schedule_job_event(runtime, job_id, "completed")
    except Exception:
        log.exception("event=webhook_schedule_failed job_id=%s", job_id)
    try:
        if in_batch:
            schedule_progress_check(runtime, job_id)
    except Exception:
        log.exception("event=batch_progress_failed job_id=%s", job_id)


def batch_finished(runtime: Runtime, batch_id: str) -> None:
    """A batch was finalized: its `completed` webhook, if it has one."""
    try:
        schedule_batch_event(runtime, batch_id)
    except Exception:
        log.exception("event=batch_webhook_failed batch_id=%s", batch_id)
