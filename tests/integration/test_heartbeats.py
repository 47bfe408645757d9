"""Workers' heartbeats: readiness and the maintenance pass find live workers in one sorted
set read, never by scanning the keyspace, and a lapsed heartbeat is not a live worker."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from services.api import create_app
from services.core.heartbeats import (
    BACKGROUND_WORKERS_KEY,
    beat_background_worker,
    beat_model_worker,
    live_background_workers,
    live_model_workers,
    model_workers_key,
    process_name,
)
from tests.support import make_settings


def test_readyz_finds_a_live_worker_without_scanning(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = f"beat-{secrets.token_hex(3)}"
    settings = make_settings(
        tmp_path, database_url, redis_url, tiny_model_dir, served_model_name=model
    )
    app = create_app(settings)
    client = app.test_client()
    assert client.get("/readyz").get_json()["checks"]["worker"] is False

    def no_scans(*_: Any, **__: Any) -> Any:
        raise AssertionError("readiness scanned the keyspace")

    monkeypatch.setattr(redis.Redis, "scan_iter", no_scans)
    monkeypatch.setattr(redis.Redis, "scan", no_scans)
    monkeypatch.setattr(redis.Redis, "keys", no_scans)
    beat_model_worker(app.extensions["vlmq"].redis, model, interval_s=1.0)
    body = client.get("/readyz").get_json()
    assert body["checks"]["worker"] is True, body


def test_a_lapsed_heartbeat_is_not_a_live_worker(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    model = f"lapse-{secrets.token_hex(3)}"
    beat_model_worker(client, model, interval_s=1.0)
    assert [info["name"] for info in live_model_workers(client, model)] == [process_name()]
    # Another process whose heartbeat lapsed a second ago.
    client.zadd(model_workers_key(model), {"elsewhere:99": time.time() - 1})
    assert [info["name"] for info in live_model_workers(client, model)] == [process_name()]
    beat_background_worker(client, interval_s=1.0)
    assert process_name() in live_background_workers(client)
    client.zadd(BACKGROUND_WORKERS_KEY, {"gone:1": time.time() - 1})
    assert "gone:1" not in live_background_workers(client)
