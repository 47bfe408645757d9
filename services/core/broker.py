"""The broker as the domain sees it: the fair queue of model work, and Celery's queues and
task names for the background work (webhook deliveries, batch bookkeeping).

A job of a model is queued in the fair queue (`services.core.fair_queue`) and nothing else:
the model's workers take work from there directly (see `workers.consumer`), woken by the
announcement the fair queue makes of each push. No broker message stands for a job, so the
API publishes none and a worker consumes none per job; the maintenance pass puts back a
queued job the fair queue lost.

The API never imports worker code: it sends the background tasks by name. The background
workers build their app from the same `create_celery`, so both agree on every setting.
"""

from __future__ import annotations

import redis
from celery import Celery

from services.core.config import Settings
from services.core.fair_queue import FairQueue, QueuedWork

# Webhook deliveries and batch bookkeeping have queues of their own, served by
# `vlmq background-worker` (no model).
DELIVER_WEBHOOK_TASK = "vlmq.deliver_webhook"
WEBHOOK_QUEUE = "vlmq.webhooks"
BATCHES_QUEUE = "vlmq.batches"
BATCH_EXPAND_TASK = "vlmq.batch.expand"
BATCH_PROGRESS_TASK = "vlmq.batch.progress"

# The broker has held a message this long without an ack: give it to another consumer.
# Far above any webhook attempt's or batch task's run time; the maintenance pass finds
# lost deliveries and stalled batches sooner.
VISIBILITY_TIMEOUT_S = 6 * 3600


def create_celery(settings: Settings) -> Celery:
    """A Celery app on the deployment's Redis, configured for at-least-once delivery."""
    app = Celery("vlmq", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        # Acknowledge after the task ran, and give the message back if the worker dies,
        # so a killed worker loses nothing.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # Redelivery of unacknowledged messages; the maintenance pass usually acts first.
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
        },
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.5},
        worker_hijack_root_logger=False,
        # Task events (sent, received, started, succeeded…) for Flower and celery-exporter,
        # when the operator wants them: four Redis publishes per task (vlmq's /metrics
        # needs none of them).
        worker_send_task_events=settings.celery_task_events,
        task_send_sent_event=settings.celery_task_events,
    )
    return app


class Broker:
    """Queues model work in the fair queue and sends background tasks by name; the one place
    that knows queues."""

    def __init__(self, app: Celery, settings: Settings, client: redis.Redis) -> None:
        self.app = app
        self.redis = client
        self.fair = FairQueue(client, settings.infer_queue)

    def enqueue_jobs(self, work: list[QueuedWork]) -> None:
        """Queue jobs in the fair queue (which announces them to the model's workers)."""
        self.fair.push(work)

    def enqueue_webhook(self, delivery_id: str, attempt: int, countdown_s: float = 0) -> None:
        """Send attempt number `attempt` of a delivery to the webhook queue."""
        self.app.send_task(
            DELIVER_WEBHOOK_TASK,
            args=[delivery_id, attempt],
            queue=WEBHOOK_QUEUE,
            countdown=countdown_s or None,
        )

    def send_batch_task(self, task: str, batch_id: str, countdown_s: float = 0) -> None:
        """Send a batch bookkeeping task to the background queue (no model needed there)."""
        self.app.send_task(
            task, args=[batch_id], queue=BATCHES_QUEUE, countdown=countdown_s or None
        )
