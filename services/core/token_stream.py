"""Generated text as it appears, from the worker to the API, over a Redis stream per job.

A Redis stream (not pub/sub) so a reader that subscribes late still reads from the start.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

STREAM_PREFIX = "vlmq:tokens:"
STREAM_TTL_S = 600


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
    key = stream_key(job_id)
    pipeline = client.pipeline(transaction=False)
    pipeline.xadd(key, {"delta": delta.encode()})
    pipeline.expire(key, STREAM_TTL_S)
    pipeline.execute()


def publish_end(client: redis.Redis, job_id: str) -> None:
    """Mark the job's stream finished."""
    key = stream_key(job_id)
    pipeline = client.pipeline(transaction=False)
    pipeline.xadd(key, {"done": b"1"})
    pipeline.expire(key, STREAM_TTL_S)
    pipeline.execute()


def read_events(client: redis.Redis, job_id: str, block_ms: int) -> Iterator[StreamEvent | None]:
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
