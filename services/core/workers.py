"""What the API can see of the workers: their heartbeats in Redis."""

from __future__ import annotations

import json

import redis

HEARTBEAT_PREFIX = "vlmq:worker:"


def live_workers(client: redis.Redis, model_id: str) -> list[dict[str, object]]:
    """Workers that announced, within their heartbeat's lifetime, a loaded `model_id`."""
    found = []
    for key in client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=100):
        raw = client.get(key)
        if raw:
            info = json.loads(raw)
            if info.get("model") == model_id:
                found.append(info)
    return found
