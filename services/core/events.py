"""Job-finished notifications over Redis pub/sub, so waiters never poll the database."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

CHANNEL_PREFIX = "vlmq:job-done:"


def publish_job_done(client: redis.Redis, job_id: str) -> None:
    """Tell anyone waiting that the job reached a terminal state."""
    client.publish(CHANNEL_PREFIX + job_id, b"done")


def wait_for_job(
    client: redis.Redis, job_id: str, is_done: Callable[[], bool], timeout_s: float
) -> bool:
    """Block until the job is done or `timeout_s` passes; True when it is done.

    Subscribes first and checks the database once after, so a job finishing between the
    check and the subscription is not missed. A notification is re-checked against the
    database because the database, not Redis, is the source of truth.
    """
    if timeout_s <= 0:
        return is_done()
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(CHANNEL_PREFIX + job_id)
        if is_done():
            return True
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            # Wake at least every few seconds: a lost notification must not hang the caller.
            pubsub.get_message(timeout=min(remaining, 5.0))
            if is_done():
                return True
        return is_done()
    finally:
        pubsub.close()
