"""The Celery broker as the domain sees it: queue and task names, sending tasks by name,
and the fair queue that decides which job a worker runs.

The API never imports worker code: it sends `vlmq.infer` by name to the model's queue.
The workers build their app from the same `create_celery`, so both agree on every setting.

A model's Celery messages say only "there is work for this model": the job itself waits in
the fair queue (`services.core.fair_queue`), and a worker that takes a message runs whatever
is fairest then (see `workers.dispatch`). One message is sent per unit of work (an
interactive job, or a chunk of batch lines), so there are as many messages as units; the
maintenance pass sends more when messages were lost, and a message that finds nothing to do
is simply acknowledged.
"""

from __future__ import annotations

import math
from typing import cast

import redis
from celery import Celery

from services.core.bands import Band
from services.core.config import Settings
from services.core.fair_queue import FairQueue, QueuedWork

# "Run the next unit of work of this model": one message per unit queued.
INFER_TASK = "vlmq.infer"
# The same, as messages of earlier versions sent for chunks of batch lines.
INFER_CHUNK_TASK = "vlmq.infer_chunk"
# Webhook deliveries and batch bookkeeping have queues of their own, served by
# `vlmq background-worker` (no model).
DELIVER_WEBHOOK_TASK = "vlmq.deliver_webhook"
WEBHOOK_QUEUE = "vlmq.webhooks"
BATCHES_QUEUE = "vlmq.batches"
BATCH_EXPAND_TASK = "vlmq.batch.expand"
BATCH_PROGRESS_TASK = "vlmq.batch.progress"

# The broker has held a message this long without an ack: give it to another consumer.
# Far above any job's run time, because the maintenance pass finds lost work sooner (by
# leases, and by the fair queue's bookkeeping); redelivery only adds a message that finds
# nothing to do.
VISIBILITY_TIMEOUT_S = 6 * 3600
# How the transport names the list of a priority other than 0: queue + separator + priority.
PRIORITY_SEPARATOR = "\x06\x16"


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
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            # Messages carry no priority (the fair queue orders the work); messages of
            # earlier versions, sent with one, are still read.
            "priority_steps": list(range(10)),
            "queue_order_strategy": "priority",
        },
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.5},
        worker_hijack_root_logger=False,
        # Task events (sent, received, started, succeeded…) for Flower and celery-exporter,
        # when the operator wants them: four Redis publishes per job, about a tenth of the
        # API's and the worker's own CPU per job (vlmq's /metrics needs none of them).
        worker_send_task_events=settings.celery_task_events,
        task_send_sent_event=settings.celery_task_events,
    )
    return app


class Broker:
    """Sends vlmq's tasks by name; the one place that knows queues and the fair queue."""

    def __init__(self, app: Celery, settings: Settings, client: redis.Redis) -> None:
        self.app = app
        self.infer_queue = settings.infer_queue
        self.chunk_size = max(1, settings.max_batch)
        self.redis = client
        self.fair = FairQueue(client, settings.infer_queue)
        # Long enough to outlive the gap between two maintenance passes.
        self.shortfall_ttl_s = max(10, int(3 * settings.reconcile_interval_s))

    def enqueue_jobs(self, work: list[QueuedWork]) -> None:
        """Queue jobs in the fair queue, then send one message per unit of work they make.

        Queued before the messages are sent: a crash in between leaves jobs without a
        message, which the maintenance pass sends (`send_missing_messages`), never a message
        without work (that would only be acknowledged).
        """
        if not work:
            return
        self.fair.push(work)
        lines = sum(1 for item in work if item.band == Band.BATCH and not item.alone)
        units = len(work) - lines + math.ceil(lines / self.chunk_size)
        self.send_messages(units)

    def send_messages(self, count: int) -> None:
        """Send `count` "run the next unit" messages to the model's queue."""
        for _ in range(count):
            self.app.send_task(INFER_TASK, queue=self.infer_queue)

    def send_missing_messages(self) -> int:
        """Send a message for each unit of work waiting beyond the messages queued (lost
        with a worker, or never sent); returns how many were sent.

        A message a worker has just taken is in no list until its unit is picked, so one
        look can see a shortfall that is not there: only a shortfall seen on two passes in
        a row (the smaller of the two) is made up.
        """
        shortfall = max(0, self.fair.units(self.chunk_size) - self.messages_waiting())
        previous = cast(
            "bytes | None",
            self.redis.set(self.shortfall_key, shortfall, ex=self.shortfall_ttl_s, get=True),
        )
        missing = min(shortfall, int(previous or 0))
        if missing > 0:
            self.send_messages(missing)
            self.redis.set(self.shortfall_key, shortfall - missing, ex=self.shortfall_ttl_s)
        return missing

    @property
    def shortfall_key(self) -> str:
        """Where the last maintenance pass left the shortfall of messages it saw."""
        return f"vlmq:fq:{self.infer_queue}:shortfall"

    def messages_waiting(self) -> int:
        """How many messages wait in the model's queue (at any priority)."""
        pipeline = self.redis.pipeline(transaction=False)
        for name in self.priority_queue_names():
            pipeline.llen(name)
        return sum(pipeline.execute())

    def priority_queue_names(self) -> list[str]:
        """The Redis lists of the model's queue, one per priority (kombu's naming)."""
        return [self.infer_queue] + [
            f"{self.infer_queue}{PRIORITY_SEPARATOR}{priority}" for priority in range(1, 10)
        ]

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
