"""The Redis connection used for the cache, events and worker heartbeats."""

from __future__ import annotations

import redis

from services.core.config import Settings


def create_redis(settings: Settings) -> redis.Redis:
    """A Redis client for the deployment's Redis (the embedded one when none is configured)."""
    return redis.Redis.from_url(
        settings.broker_url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
    )
