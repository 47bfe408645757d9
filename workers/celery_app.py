"""The worker's Celery app: the shared configuration plus tasks and process hooks."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init

from services.core.broker import create_celery
from services.core.config import Settings
from workers.dispatch import NewcomerWatch
from workers.observability import celery_banner_args, serve_metrics, use_vlmq_logging
from workers.schedulers.continuous import headroom_rows
from workers.state import init_state
from workers.tasks import register_tasks

# How often a saturated worker looks for a newcomer's job (see `workers.dispatch`).
# The newcomer watch looks when interactive work is announced, at most every
# NEWCOMER_GAP_S, and every NEWCOMER_FALLBACK_S in any case (see `workers.dispatch`).
NEWCOMER_GAP_S = 0.005
NEWCOMER_FALLBACK_S = 0.5


def create_worker_app(settings: Settings) -> Celery:
    """The Celery app a worker runs: task threads feeding one batching model process."""
    app = create_celery(settings)
    use_vlmq_logging(settings)

    def load_model(**_: Any) -> None:
        # Runs in the worker process itself (the threads pool never forks), before the
        # worker consumes anything: a worker whose model cannot load takes no job.
        state = init_state(settings)
        NewcomerWatch(
            state,
            worker_threads(settings),
            # One thread per headroom row the scheduler keeps for newcomers.
            spare=headroom_rows(settings.max_batch),
            fallback_s=NEWCOMER_FALLBACK_S,
            min_gap_s=NEWCOMER_GAP_S,
        ).start()
        serve_metrics(settings)

    worker_init.connect(load_model, weak=False)
    register_tasks(app)
    return app


def worker_threads(settings: Settings) -> int:
    """Task threads: enough to fill one batch while the previous one runs."""
    return max(2, 2 * settings.max_batch)


def run_worker(settings: Settings, extra_args: list[str] | None = None) -> None:
    """Run a worker in the foreground on the model's queue (one process per GPU)."""
    app = create_worker_app(settings)
    app.worker_main(
        [
            *celery_banner_args(settings),
            "worker",
            "--pool=threads",
            f"--concurrency={worker_threads(settings)}",
            f"--queues={settings.infer_queue}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
            *(extra_args or []),
        ]
    )
