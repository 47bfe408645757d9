"""The answer cache and single-flight: one key function, finished results in Redis, and
one model call shared by identical requests in flight.

Single-flight: the first job to start a cache key takes a short Redis lease on it; another
job with the same key, on any worker, waits for that job to finish and takes its answer
from the cache.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, cast

import redis

from services.core.inputs.prompts import GenerationParams

CACHE_PREFIX = "vlmq:cache:"
INFLIGHT_PREFIX = "vlmq:inflight:"


def is_cacheable(params: GenerationParams) -> bool:
    """Only deterministic requests are cached: greedy decoding, or sampling with a fixed seed."""
    return params.temperature == 0 or params.seed is not None


def cache_key(
    *,
    model_revision: str,
    messages: list[dict[str, Any]],
    params: GenerationParams,
    tenant_id: str | None,
) -> str:
    """The cache key: model revision + image hashes + canonical prompt + generation parameters.

    Images are already referenced by SHA-256 inside the canonical messages. `tenant_id` is
    None when the operator shares the cache across tenants.
    """
    canonical = json.dumps(
        {
            "model": model_revision,
            "messages": messages,
            "params": params.model_dump(mode="json"),
            "tenant": tenant_id,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return CACHE_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


def get_cached(client: redis.Redis, key: str) -> dict[str, Any] | None:
    """The cached result under `key`, if any."""
    raw = cast(bytes | None, client.get(key))  # a sync client's answer
    return json.loads(raw) if raw else None


def put_cached(client: redis.Redis, key: str, value: dict[str, Any], ttl_s: int) -> None:
    """Store a finished result under `key` for `ttl_s` seconds."""
    client.set(key, json.dumps(value), ex=ttl_s)


def lead_or_follow(client: redis.Redis, cache_key: str, job_id: str, ttl_s: int) -> str | None:
    """None if this job now leads the key; else the id of the job already computing it.

    A job whose earlier attempt led the key (and died) leads it again.
    """
    key = INFLIGHT_PREFIX + cache_key
    for _ in range(3):
        if client.set(key, job_id, nx=True, ex=ttl_s):
            return None
        raw = client.get(key)
        if raw is None:  # the leader finished between the two calls
            continue
        leader = raw.decode() if isinstance(raw, bytes) else str(raw)
        if leader == job_id:
            client.expire(key, ttl_s)
            return None
        return leader
    return None


def release_lead(client: redis.Redis, cache_key: str, job_id: str) -> None:
    """Give up the lead on a key, if this job still holds it."""
    key = INFLIGHT_PREFIX + cache_key
    if client.get(key) == job_id.encode():
        client.delete(key)
