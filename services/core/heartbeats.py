"""Workers' heartbeats in Redis, written and read in one place.

A model worker announces itself (with the model it has loaded) once its model is ready;
`/readyz` and the tests read that. A background worker announces itself so the
maintenance pass re-sends lost webhook deliveries only when someone will take them.
"""

from __future__ import annotations

import json
import os
import socket
from typing import cast

import redis

MODEL_WORKER_PREFIX = "vlmq:worker:"
BACKGROUND_WORKER_PREFIX = "vlmq:background-worker:"
LOAD_FAILURE_PREFIX = "vlmq:worker-load-failure:"
LOAD_FAILURE_TTL_S = 600


def process_name() -> str:
    """This process as heartbeats name it: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def beat_model_worker(client: redis.Redis, model_id: str, interval_s: float) -> None:
    """Announce this process as a live worker with `model_id` loaded, for three intervals."""
    payload = json.dumps({"model": model_id, "pid": os.getpid()})
    client.set(MODEL_WORKER_PREFIX + process_name(), payload, ex=int(interval_s * 3) + 1)


def beat_background_worker(client: redis.Redis, interval_s: float) -> None:
    """Announce this process as a live background worker, for three intervals."""
    client.set(BACKGROUND_WORKER_PREFIX + process_name(), b"1", ex=int(interval_s * 3) + 1)


def live_model_workers(client: redis.Redis, model_id: str) -> list[dict[str, object]]:
    """Workers that announced, within their heartbeat's lifetime, a loaded `model_id`."""
    found = []
    for key in client.scan_iter(match=MODEL_WORKER_PREFIX + "*", count=100):
        raw = cast(bytes | None, client.get(key))  # a sync client's answer
        if raw:
            info = json.loads(raw)
            if info.get("model") == model_id:
                found.append(info)
    return found


def live_background_workers(client: redis.Redis) -> list[str]:
    """Names (`host:pid`) of the background workers whose heartbeat is fresh."""
    return sorted(
        (key.decode() if isinstance(key, bytes) else str(key)).removeprefix(
            BACKGROUND_WORKER_PREFIX
        )
        for key in client.scan_iter(match=BACKGROUND_WORKER_PREFIX + "*")
    )


def report_load_failure(client: redis.Redis, model_id: str, reason: str) -> None:
    """Leave word that a worker of `model_id` could not load its model (read by `/readyz`)."""
    client.set(LOAD_FAILURE_PREFIX + model_id, reason.encode()[:2000], ex=LOAD_FAILURE_TTL_S)


def load_failure(client: redis.Redis, model_id: str) -> str | None:
    """Why the last worker of `model_id` that failed to load did, if that was recent."""
    raw = client.get(LOAD_FAILURE_PREFIX + model_id)
    return raw.decode(errors="replace") if isinstance(raw, bytes) else None
