"""Workers' heartbeats in Redis, written and read in one place.

A model worker announces itself (in the set of the model it has loaded) once its model is
ready; `/readyz` and the tests read that. A background worker announces itself so the
maintenance pass re-sends lost webhook deliveries only when someone will take them.
"""

from __future__ import annotations

import os
import socket
import time
from typing import cast

import redis

# Live workers are kept in sorted sets, one per model and one for background workers: the
# member is the process (`host:pid`), the score when its heartbeat lapses (Unix time), so
# readiness and the maintenance pass read who is alive without scanning the keyspace.
MODEL_WORKERS_PREFIX = "vlmq:workers:"
BACKGROUND_WORKERS_KEY = "vlmq:background-workers"
LOAD_FAILURE_PREFIX = "vlmq:worker-load-failure:"
LOAD_FAILURE_TTL_S = 600


def process_name() -> str:
    """This process as heartbeats name it: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def model_workers_key(model_id: str) -> str:
    """The sorted set of the live workers of `model_id`."""
    return MODEL_WORKERS_PREFIX + model_id


def beat(client: redis.Redis, key: str, interval_s: float) -> None:
    """Announce this process in `key` for three intervals, and drop members long lapsed
    (one round trip)."""
    now = time.time()
    lifetime_s = int(interval_s * 3) + 1
    pipeline = client.pipeline(transaction=False)
    pipeline.zadd(key, {process_name(): now + lifetime_s})
    pipeline.zremrangebyscore(key, "-inf", now - lifetime_s)
    # The set itself goes once every member has stopped beating.
    pipeline.expire(key, 2 * lifetime_s)
    pipeline.execute()


def live(client: redis.Redis, key: str) -> list[str]:
    """The processes of `key` whose heartbeat has not lapsed."""
    names = cast(list[bytes], client.zrangebyscore(key, time.time(), "+inf"))
    return sorted(name.decode() for name in names)


def beat_model_worker(client: redis.Redis, model_id: str, interval_s: float) -> None:
    """Announce this process as a live worker with `model_id` loaded, for three intervals."""
    beat(client, model_workers_key(model_id), interval_s)


def beat_background_worker(client: redis.Redis, interval_s: float) -> None:
    """Announce this process as a live background worker, for three intervals."""
    beat(client, BACKGROUND_WORKERS_KEY, interval_s)


def live_model_workers(client: redis.Redis, model_id: str) -> list[dict[str, object]]:
    """Workers that announced, within their heartbeat's lifetime, a loaded `model_id`."""
    return [
        {"model": model_id, "name": name, "pid": int(name.rpartition(":")[2])}
        for name in live(client, model_workers_key(model_id))
    ]


def live_background_workers(client: redis.Redis) -> list[str]:
    """Names (`host:pid`) of the background workers whose heartbeat is fresh."""
    return live(client, BACKGROUND_WORKERS_KEY)


def report_load_failure(client: redis.Redis, model_id: str, reason: str) -> None:
    """Leave word that a worker of `model_id` could not load its model (read by `/readyz`)."""
    client.set(LOAD_FAILURE_PREFIX + model_id, reason.encode()[:2000], ex=LOAD_FAILURE_TTL_S)


def load_failure(client: redis.Redis, model_id: str) -> str | None:
    """Why the last worker of `model_id` that failed to load did, if that was recent."""
    raw = client.get(LOAD_FAILURE_PREFIX + model_id)
    return raw.decode(errors="replace") if isinstance(raw, bytes) else None
