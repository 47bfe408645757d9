"""The Celery broker as the domain sees it: queue and task names, and sending tasks by name.

The API never imports worker code: it sends `vlmq.infer` by name to the model's queue.
The workers build their app from the same `create_celery`, so both agree on every setting.
"""

from __future__ import annotations

from celery import Celery

from services.core.config import Settings

INFER_TASK = "vlmq.infer"
# Webhook deliveries and batch bookkeeping have queues of their own, served by
# `vlmq background-worker` (no model).
DELIVER_WEBHOOK_TASK = "vlmq.deliver_webhook"
WEBHOOK_QUEUE = "vlmq.webhooks"
BATCHES_QUEUE = "vlmq.batches"
BATCH_EXPAND_TASK = "vlmq.batch.expand"
BATCH_PROGRESS_TASK = "vlmq.batch.progress"

# Redis priorities: 0 is served first. Batch work goes behind interactive work.
INTERACTIVE_PRIORITY = 0
BACKGROUND_PRIORITY = 9


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
        task_default_queue=settings.infer_queue,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # Redelivery of unacknowledged messages; the maintenance pass usually acts first.
        broker_transport_options={
            "visibility_timeout": settings.lease_s * 2,
            # Priorities on Redis: one list per level, served in order, so batch jobs
            # (low priority) never starve interactive ones.
            "priority_steps": list(range(10)),
            "queue_order_strategy": "priority",
        },
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.5},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


class Broker:
    """Sends vlmq's tasks by name; the one place that knows queues and priorities."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.infer_queue = settings.infer_queue

    def enqueue_job(self, job_id: str, *, background: bool = False) -> None:
        """Send the job to its model's queue; the task id is the job id."""
        priority = BACKGROUND_PRIORITY if background else INTERACTIVE_PRIORITY
        self.app.send_task(
            INFER_TASK, args=[job_id], task_id=job_id, queue=self.infer_queue, priority=priority
        )

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
