"""`vlmq background-worker`: a lightweight Celery worker (no model) for the work around jobs.

It delivers webhooks (receivers can be slow or down, so deliveries never run in the API or
in the inference worker) and does batch bookkeeping (expanding input files into jobs,
finalizing batches). The threads pool never forks: the runtime is created once per process
when the worker starts.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog
from celery import Celery
from celery.signals import worker_init

from services.core import metrics
from services.core.bootstrap import create_runtime
from services.core.broker import BATCHES_QUEUE, DELIVER_WEBHOOK_TASK, WEBHOOK_QUEUE, create_celery
from services.core.config import Settings
from services.core.heartbeats import beat_background_worker
from services.core.runtime import Runtime
from services.core.webhooks.delivery import deliver
from workers.batch_tasks import register_batch_tasks
from workers.observability import celery_banner_args, serve_metrics, use_vlmq_logging

log = structlog.get_logger(__name__)
HEARTBEAT_S = 2.0

_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """This process's runtime (created when the worker started)."""
    if _runtime is None:
        raise RuntimeError("the webhook worker's runtime is created by the worker_init hook")
    return _runtime


def heartbeat(runtime: Runtime) -> None:
    """Announce a live webhook worker (tests and operators wait on it)."""
    while True:
        try:
            beat_background_worker(runtime.redis, HEARTBEAT_S)
        except Exception:
            log.warning("webhook_heartbeat_failed")
        time.sleep(HEARTBEAT_S)


def register_webhook_tasks(app: Celery) -> None:
    """Register the delivery task on the app."""

    @app.task(name=DELIVER_WEBHOOK_TASK, acks_late=True, reject_on_worker_lost=True)
    def deliver_webhook(delivery_id: str, attempt: int) -> str | None:
        """Make one attempt of a delivery; a duplicate message is a no-op."""
        return deliver(get_runtime(), delivery_id, attempt)


def create_background_app(settings: Settings) -> Celery:
    """The Celery app of a background worker."""
    app = create_celery(settings)
    use_vlmq_logging(settings)

    def start(**_: Any) -> None:
        global _runtime
        _runtime = create_runtime(settings)
        metrics.start_background_series()
        serve_metrics(settings)
        threading.Thread(
            target=heartbeat, args=(_runtime,), name="vlmq-background-heartbeat", daemon=True
        ).start()

    worker_init.connect(start, weak=False)
    register_webhook_tasks(app)
    register_batch_tasks(app, get_runtime)
    return app


# The queues a background worker takes, by the name `vlmq background-worker --queues` uses.
QUEUES = {
    "all": [WEBHOOK_QUEUE, BATCHES_QUEUE],
    "webhooks": [WEBHOOK_QUEUE],
    "batches": [BATCHES_QUEUE],
}


def run_background_worker(
    settings: Settings, extra_args: list[str] | None = None, queues: str = "all"
) -> None:
    """Run a background worker in the foreground on the webhook queue, the batch queue, or
    both (`queues`, a key of `QUEUES`)."""
    create_background_app(settings).worker_main(
        [
            *celery_banner_args(settings),
            "worker",
            "--pool=threads",
            f"--concurrency={settings.background_worker_concurrency}",
            f"--queues={','.join(QUEUES[queues])}",
            f"--loglevel={settings.log_level}",
            # A name of its own: it may share a host with inference workers.
            "--hostname=background@%h",
            "--without-gossip",
            "--without-mingle",
            *(extra_args or []),
        ]
    )
