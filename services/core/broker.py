"""The Celery broker as the domain sees it: queue and task names, sending tasks by name,
and the markers that tell a job's queue message still exists.

The API never imports worker code: it sends `vlmq.infer` by name to the model's queue.
The workers build their app from the same `create_celery`, so both agree on every setting.

Every job sent to a queue gets a marker key in the same Redis as the queue. A Redis that
restarts empty loses both the messages and the markers, so the maintenance pass re-sends
exactly the queued jobs whose marker is gone, and never a job merely waiting in a backlog.
"""

from __future__ import annotations

import contextlib
import json
from typing import cast

import redis
from celery import Celery

from services.core.config import Settings

INFER_TASK = "vlmq.infer"
# Batch lines travel in chunks: one task runs up to `max_batch` lines in one model call.
INFER_CHUNK_TASK = "vlmq.infer_chunk"
# The message header that names a chunk's jobs (read back by `Broker.unacknowledged`).
JOBS_HEADER = "vlmq_jobs"
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
ENQUEUED_MARKER_PREFIX = "vlmq:enqueued:"
# A marker lives from the send until a worker consumes the message (it is deleted then);
# the TTL only cleans up after a worker that died in between. Longer than any backlog should
# last (a batch's window is 24 h): a job still queued when its marker expires is re-sent once.
ENQUEUED_MARKER_TTL_S = 3 * 24 * 3600
# The broker has held a message this long without an ack: give it to another consumer.
# Far above any job's run time, because the maintenance pass finds lost work sooner (by
# leases and markers); redelivery only adds a duplicate that a claim turns away.
VISIBILITY_TIMEOUT_S = 6 * 3600
# Where kombu's Redis transport keeps messages taken but not yet acknowledged.
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
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
            # Priorities on Redis: one list per level, served in order, so batch jobs
            # (low priority) never starve interactive ones.
            "priority_steps": list(range(10)),
            "queue_order_strategy": "priority",
        },
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.5},
        worker_hijack_root_logger=False,
        # Task events (sent, received, started, succeeded…), so Flower and celery-exporter
        # see every task without being switched on remotely.
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app


class Broker:
    """Sends vlmq's tasks by name; the one place that knows queues and priorities."""

    def __init__(self, app: Celery, settings: Settings, client: redis.Redis) -> None:
        self.app = app
        self.infer_queue = settings.infer_queue
        self.chunk_size = max(1, settings.max_batch)
        self.redis = client

    def enqueue_jobs(
        self, job_ids: list[str], *, background: bool = False, one_by_one: bool = False
    ) -> None:
        """Send jobs to the model's queue, marking each as sent.

        An interactive job is a task of its own (the task id is the job id). Background
        jobs (batch lines) go behind interactive ones in chunks of `max_batch`, one task
        per chunk, so a worker claims, runs and records a chunk's lines together.

        Each job is marked right after the send of its message: a crash between the two
        leaves a message without a marker (re-sent once; the duplicate claim is a no-op),
        never a marker without a message.

        `one_by_one` sends background jobs as tasks of their own too: lines that already
        lost a worker once must not take a chunk of innocent lines down with them again.
        """
        if not background or one_by_one:
            priority = BACKGROUND_PRIORITY if background else INTERACTIVE_PRIORITY
            for job_id in job_ids:
                self.app.send_task(
                    INFER_TASK,
                    args=[job_id],
                    task_id=job_id,
                    queue=self.infer_queue,
                    priority=priority,
                )
                self.redis.set(self.marker_key(job_id), b"1", ex=ENQUEUED_MARKER_TTL_S)
            return
        for start in range(0, len(job_ids), self.chunk_size):
            chunk = job_ids[start : start + self.chunk_size]
            self.app.send_task(
                INFER_CHUNK_TASK,
                args=[chunk],
                queue=self.infer_queue,
                priority=BACKGROUND_PRIORITY,
                headers={JOBS_HEADER: chunk},
            )
            self.mark(chunk)

    def mark(self, job_ids: list[str]) -> None:
        """Mark these jobs' message as sent (one round trip)."""
        pipeline = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipeline.set(self.marker_key(job_id), b"1", ex=ENQUEUED_MARKER_TTL_S)
        pipeline.execute()

    @staticmethod
    def marker_key(job_id: str) -> str:
        """The Redis key of a job's enqueue marker."""
        return ENQUEUED_MARKER_PREFIX + job_id

    def drop_markers(self, job_ids: list[str]) -> None:
        """Drop the enqueue markers of these jobs: a worker consumed their message (a claimed
        job is watched by its lease from then on, and one the database could not claim is
        sent again by the maintenance pass), or they are about to be sent again."""
        if job_ids:
            self.redis.delete(*map(self.marker_key, job_ids))

    def unacknowledged(self, job_ids: list[str]) -> dict[str, float]:
        """Those of `job_ids` whose message a worker has taken and not yet acknowledged, with
        when it took it (Unix time).

        Reads the Redis transport's own bookkeeping of unacknowledged messages (kombu's
        `unacked` hash and `unacked_index` sorted set, keyed by delivery tag); it holds one
        entry per message in a worker's hands, so it stays small.
        """
        if not job_ids:
            return {}
        taken: list[tuple[bytes, float]] = self.redis.zrange(  # type: ignore[assignment]
            UNACKED_INDEX_KEY, 0, -1, withscores=True
        )
        if not taken:
            return {}
        wanted = set(job_ids)
        found: dict[str, float] = {}
        raws = cast(list[bytes | None], self.redis.hmget(UNACKED_KEY, [tag for tag, _ in taken]))
        for (_tag, taken_at), raw in zip(taken, raws, strict=True):
            if raw is None:  # acknowledged in between
                continue
            with contextlib.suppress(ValueError, TypeError, KeyError, IndexError):
                headers = json.loads(raw)[0]["headers"]
                for job_id in headers.get(JOBS_HEADER) or [headers["id"]]:
                    if job_id in wanted:
                        found[job_id] = float(taken_at)
        return found

    def queue_is_empty(self) -> bool:
        """Whether no message waits in the model's queue (at any priority)."""
        pipeline = self.redis.pipeline(transaction=False)
        for name in self.priority_queue_names():
            pipeline.llen(name)
        return not any(pipeline.execute())

    def priority_queue_names(self) -> list[str]:
        """The Redis lists of the model's queue, one per priority (kombu's naming)."""
        return [self.infer_queue] + [
            f"{self.infer_queue}{PRIORITY_SEPARATOR}{priority}" for priority in range(1, 10)
        ]

    def unmarked(self, job_ids: list[str]) -> list[str]:
        """Those of `job_ids` whose queue message is known lost (their marker is gone)."""
        if not job_ids:
            return []
        pipeline = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipeline.exists(self.marker_key(job_id))
        found = pipeline.execute()
        return [job_id for job_id, exists in zip(job_ids, found, strict=True) if not exists]

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
