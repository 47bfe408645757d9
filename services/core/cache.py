"""The answer cache: one key function, and get/put of finished results in Redis."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis

from services.core.prompts import GenerationParams

CACHE_PREFIX = "vlmq:cache:"


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
    raw = client.get(key)
    return json.loads(raw) if raw else None


def put_cached(client: redis.Redis, key: str, value: dict[str, Any], ttl_s: int) -> None:
    """Store a finished result under `key` for `ttl_s` seconds."""
    client.set(key, json.dumps(value), ex=ttl_s)
