"""The worker's Celery app: the shared configuration plus tasks and process hooks."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from services.core.config import Settings
from services.core.queue import create_celery
from workers.state import init_state
from workers.tasks import register_tasks


def create_worker_app(settings: Settings) -> Celery:
    """The Celery app a worker runs: one pool process, which loads the model once."""
    app = create_celery(settings)
    # The child announces itself only after this hook; loading starts in a thread so
    # a slow model load never trips Celery's start-up timeout.
    app.conf.worker_proc_alive_timeout = 60

    def load_model_in_child(**_: Any) -> None:
        logging.basicConfig(level=settings.log_level)
        init_state(settings)

    worker_process_init.connect(load_model_in_child, weak=False)
    register_tasks(app)
    return app


def run_worker(settings: Settings, extra_args: list[str] | None = None) -> None:
    """Run a worker in the foreground on the model's queue (one process per GPU)."""
    app = create_worker_app(settings)
    app.worker_main(
        [
            "worker",
            "--pool=prefork",
            "--concurrency=1",
            f"--queues={settings.infer_queue}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
            *(extra_args or []),
        ]
    )
