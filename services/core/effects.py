"""What follows each outbox event once its transaction has committed: waiters are woken,
webhooks scheduled, batches advanced.

`bootstrap.create_runtime` wires `dispatch` into every unit of work, and the maintenance
pass calls it for the outbox rows a dead process left behind. No consequence may fail the
change that caused it (the database already holds the truth): each is tried on its own, a
failure is logged, and the event's row stays in the outbox for the next maintenance pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
import structlog

from services.core import notify, outbox
from services.core.batches.finalize import schedule_batch_progress, schedule_progress_check
from services.core.runtime import Runtime
from services.core.webhooks.endpoints import (
    schedule_batch_endpoint_event,
    schedule_response_event,
)
from services.core.webhooks.scheduling import schedule_batch_event, schedule_job_event

log = structlog.get_logger(__name__)


def dispatch(runtime: Runtime, recorded: list[outbox.Recorded]) -> None:
    """Carry out the consequences of committed events, in order; delete the outbox rows of
    those fully carried out, and move the others to the back of the line."""
    done: list[int] = []
    failed: list[int] = []
    for item in recorded:
        ok = carry_out(runtime, item.event)
        if item.row_id is not None:
            (done if ok else failed).append(item.row_id)
    if not done and not failed:
        return
    try:
        with runtime.sessions.begin() as session:
            outbox.delete_done(session, done)
            outbox.postpone(session, failed)
    except Exception:
        # The rows stay; the maintenance pass carries them out again (harmlessly).
        log.exception("outbox_update_failed", done=len(done), failed=len(failed))


def carry_out(runtime: Runtime, event: outbox.Event) -> bool:
    """The consequences of one event; False if any of them failed."""
    match event:
        case outbox.JobStarted(job_id):
            return attempt(schedule_job_event, runtime, job_id, "start")
        case outbox.JobFinished(job_id, has_webhook, in_batch, ending):
            wake_waiters(runtime, job_id, ending)
            ok = not has_webhook or (
                attempt(schedule_job_event, runtime, job_id, "completed")
                & attempt(schedule_response_event, runtime, job_id)
            )
            return (not in_batch or attempt(schedule_progress_check, runtime, job_id)) and ok
        case outbox.BatchFinished(batch_id):
            return attempt(schedule_batch_event, runtime, batch_id) & attempt(
                schedule_batch_endpoint_event, runtime, batch_id
            )
        case outbox.BatchLinesFinished(batch_id):
            return attempt(schedule_batch_progress, runtime, batch_id)
    return True


def wake_waiters(runtime: Runtime, job_id: str, ending: dict[str, Any] | None = None) -> None:
    """Tell waiters the job ended; a lost wake-up only delays them until they re-check."""
    try:
        notify.publish_job_done(runtime.redis, job_id, ending)
    except redis.RedisError:
        log.warning("publish_failed", job_id=job_id)


def attempt(consequence: Callable[..., None], runtime: Runtime, *args: str) -> bool:
    """Run one consequence; log and report a failure instead of raising it."""
    try:
        consequence(runtime, *args)
    except Exception:
        log.exception("consequence_failed", consequence=consequence.__name__, args=args)
        return False
    return True
