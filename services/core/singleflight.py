"""Single-flight: identical deterministic requests in flight share one model call.

The first job to start a cache key takes a short Redis lease on it; another job with the
same key, on any worker, waits for that job to finish and takes its answer from the cache.
"""

from __future__ import annotations

import redis

PREFIX = "vlmq:inflight:"


def lead_or_follow(client: redis.Redis, cache_key: str, job_id: str, ttl_s: int) -> str | None:
    """None if this job now leads the key; else the id of the job already computing it."""
    key = PREFIX + cache_key
    for _ in range(3):
        if client.set(key, job_id, nx=True, ex=ttl_s):
            return None
        leader = client.get(key)
        if leader is not None:  # else the leader finished between the two calls
            return leader.decode() if isinstance(leader, bytes) else str(leader)
    return None


def release(client: redis.Redis, cache_key: str, job_id: str) -> None:
    """Give up the lead on a key, if this job still holds it."""
    key = PREFIX + cache_key
    if client.get(key) == job_id.encode():
        client.delete(key)
