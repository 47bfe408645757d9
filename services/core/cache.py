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
            # A stored policy's hash stands for questions the key has already.
            "params": params.model_dump(mode="json", exclude={"score_policy"}),
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


def put_cached(
    client: redis.Redis | redis.client.Pipeline, key: str, value: dict[str, Any], ttl_s: int
) -> None:
    """Store a finished result under `key` for `ttl_s` seconds."""
    client.set(key, json.dumps(value), ex=ttl_s)


def get_many(client: redis.Redis, keys: list[str]) -> list[dict[str, Any] | None]:
    """The cached results under `keys`, in order (one round trip)."""
    raws = cast(list[bytes | None], client.mget(keys)) if keys else []
    return [json.loads(raw) if raw else None for raw in raws]


def put_many(client: redis.Redis, values: dict[str, dict[str, Any]], ttl_s: int) -> None:
    """Store finished results for `ttl_s` seconds (one round trip)."""
    if not values:
        return
    pipeline = client.pipeline(transaction=False)
    for key, value in values.items():
        pipeline.set(key, json.dumps(value), ex=ttl_s)
    pipeline.execute()


# Look the answer up, or take the lead on computing it, in one atomic step: a cached answer
# (and no lead); or no answer and no leader (this job leads now, or again after its earlier
# attempt died leading); or the id of the job already computing it. KEYS[3], if given, is
# deleted first (the caller's own bookkeeping key, sent in the same round trip).
CHECK_OR_LEAD = """
if KEYS[3] then redis.call('DEL', KEYS[3]) end
local cached = redis.call('GET', KEYS[1])
if cached then return {cached, false} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then return {false, false} end
local leader = redis.call('GET', KEYS[2])
if (not leader) or leader == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  return {false, false}
end
return {false, leader}
"""


def check_or_lead(
    client: redis.Redis, cache_key: str, job_id: str, ttl_s: int, *, delete: str | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """(the cached answer, None) if there is one; else (None, None) if this job now leads the
    key, or (None, the id of the job already computing it). One round trip, which also
    deletes the key `delete` if given."""
    script = client.register_script(CHECK_OR_LEAD)
    keys = [cache_key, INFLIGHT_PREFIX + cache_key, *([delete] if delete else [])]
    cached, leader = cast(list[bytes | None], script(keys=keys, args=[job_id, ttl_s]))
    if cached:
        return json.loads(cached), None
    return None, leader.decode() if leader else None


def release_lead(client: redis.Redis | redis.client.Pipeline, cache_key: str) -> None:
    """Give up the lead on a key once its answer is cached (sent with the cache write).

    Unconditional: if this job's lead had lapsed and another job took it, the answer is
    cached by now, so nobody needs that lead any more.
    """
    client.delete(INFLIGHT_PREFIX + cache_key)


def release_lead_if_held(client: redis.Redis, cache_key: str, job_id: str) -> None:
    """Give up the lead on a key after a failed computation, if this job still holds it
    (another job may lead it now, and it has no answer to show yet)."""
    key = INFLIGHT_PREFIX + cache_key
    if client.get(key) == job_id.encode():
        client.delete(key)
