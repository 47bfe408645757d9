"""Transient signals over Redis: job-finished wake-ups (pub/sub) and token streams.

Waiters are woken by pub/sub instead of polling the database; generated text travels
from the worker to the API in a Redis stream per job (a stream, not pub/sub, so a reader
that subscribes late still reads from the start). Losing either only delays a reader:
the database stays the source of truth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

DONE_CHANNEL_PREFIX = "vlmq:job-done:"
STREAM_PREFIX = "vlmq:tokens:"
STREAM_TTL_S = 600
POLL_INTERVAL_S = 1.0


# --- job-finished wake-ups ---------------------------------------------------------------


def publish_job_done(client: redis.Redis, job_id: str) -> None:
    """Tell anyone waiting that the job reached a terminal state."""
    client.publish(DONE_CHANNEL_PREFIX + job_id, b"done")


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
    deadline = time.monotonic() + timeout_s
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(DONE_CHANNEL_PREFIX + job_id)
        if is_done():
            return True
        while (remaining := deadline - time.monotonic()) > 0:
            # Wake at least every few seconds: a lost notification must not hang the caller.
            pubsub.get_message(timeout=min(remaining, 5.0))
            if is_done():
                return True
        return is_done()
    except redis.RedisError:
        # Redis is down: the database still knows when the job ends.
        return poll_until_done(is_done, deadline)
    finally:
        pubsub.close()


def poll_until_done(is_done: Callable[[], bool], deadline: float) -> bool:
    """Check `is_done` every second until it holds or the deadline passes."""
    while not is_done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))
    return True


# --- token streams -----------------------------------------------------------------------


@dataclass(frozen=True)
class StreamEvent:
    """A piece of text, or the end of the stream."""

    delta: str = ""
    done: bool = False


def stream_key(job_id: str) -> str:
    """The Redis key of a job's token stream."""
    return STREAM_PREFIX + job_id


def publish_delta(client: redis.Redis, job_id: str, delta: str) -> None:
    """Append generated text to the job's stream."""
    append_to_stream(client, job_id, {"delta": delta.encode()})


def publish_end(client: redis.Redis, job_id: str) -> None:
    """Mark the job's stream finished."""
    append_to_stream(client, job_id, {"done": b"1"})


def append_to_stream(client: redis.Redis, job_id: str, fields: dict[str, bytes]) -> None:
    """Add one entry to the job's stream and keep the stream alive a while longer."""
    key = stream_key(job_id)
    pipeline = client.pipeline(transaction=False)
    pipeline.xadd(key, fields)  # type: ignore[arg-type]
    pipeline.expire(key, STREAM_TTL_S)
    pipeline.execute()


def read_stream(client: redis.Redis, job_id: str, block_ms: int) -> Iterator[StreamEvent | None]:
    """Events of the job's stream from its start; yields None each time `block_ms` passes idle."""
    last_id: Any = "0-0"
    key = stream_key(job_id)
    while True:
        answer: Any = client.xread({key: last_id}, block=block_ms, count=100)
        if not answer:
            yield None
            continue
        for entry_id, fields in answer[0][1]:
            last_id = entry_id
            if fields.get(b"done"):
                yield StreamEvent(done=True)
                return
            yield StreamEvent(delta=fields.get(b"delta", b"").decode())
