"""What one interactive job costs the service: SQL statements and Redis round trips from
`POST /v1/jobs` (with `Prefer: wait`) to `succeeded`, on a cache miss.

The API runs in-process (Flask's test client) and the worker's pipeline in a thread of
this process (`workers.pipeline.run_job`, a fake model), so every statement and round trip
of both can be counted: SQL with SQLAlchemy's `before_cursor_execute` event on their
engines, Redis by counting every packet of commands a redis-py connection sends (one per
command, one per pipeline). No broker message stands for a job: the worker takes it from
the fair queue. Not counted: the per-process work that is not per job (lease renewals,
heartbeats, the maintenance pass). The rate limiter's round trips (Flask-Limiter's
sliding-window hit and the window read for the `x-ratelimit-*` headers) are counted
apart. Warm-up jobs first open every connection.
"""

from __future__ import annotations

import io
import threading
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from PIL import Image

from services.api import create_app
from services.core.bootstrap import create_runtime
from services.core.migrate import upgrade
from services.core.tables import Job
from tests.fakes import EchoFakeBackend
from tests.support import make_settings, wait_until
from vlmq.cli import create_key
from workers.leases import LeaseKeeper
from workers.pipeline import run_job
from workers.schedulers import StaticScheduler

# The targets: the most one job may cost (and the rate limiter's share, on top).
MAX_STATEMENTS = 5
MAX_ROUND_TRIPS = 5
MAX_RATE_LIMIT_ROUND_TRIPS = 2
# Celery's task events are off by default: no publish to the event exchange.
TASK_EVENT_ROUND_TRIPS = 0


@dataclass
class Tally:
    """What has been counted while `counting` was on."""

    counting: bool = False
    statements: list[str] = field(default_factory=list)
    round_trips: Counter[str] = field(default_factory=Counter)
    rate_limit_round_trips: int = 0
    task_event_round_trips: int = 0


@contextmanager
def counting_redis(tally: Tally) -> Iterator[None]:
    """Count every packet of commands any redis-py connection sends (kombu's included)."""
    original = redis.connection.AbstractConnection.send_packed_command

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        if tally.counting:
            first = command[0] if isinstance(command, list) else command
            words = bytes(first).split(b"\r\n")
            callers = [frame.filename for frame in traceback.extract_stack(limit=24)]
            if any("/limits/" in name for name in callers):
                tally.rate_limit_round_trips += 1
            elif any("/celery/events/" in name for name in callers):
                tally.task_event_round_trips += 1
            else:
                tally.round_trips[words[2].decode() if len(words) > 2 else "?"] += 1
        original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
    try:
        yield
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (seed % 256, 40, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_one_job_costs_at_most_5_statements_and_6_round_trips(
    tmp_path: Path, database_url: str, redis_url: str, tiny_model_dir: Path
) -> None:
    # A deployment's defaults for what a job passes through: the rate limit and the queue
    # cap on (each costs its share), the cache on.
    settings = make_settings(
        tmp_path,
        database_url,
        redis_url,
        tiny_model_dir,
        served_model_name="cost-model",
        rate_limit="3000/minute",
        tenant_max_queued=1000,
    )
    upgrade(settings.sqlalchemy_url)
    key = create_key(settings, "cost", "counting")
    app = create_app(settings)
    worker_runtime = create_runtime(settings)
    api_runtime = app.extensions["vlmq"]
    tally = Tally()
    for engine in (api_runtime.engine, worker_runtime.engine):

        @sa.event.listens_for(engine, "before_cursor_execute")
        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if tally.counting:
                tally.statements.append(statement.split()[0].upper())

    scheduler = StaticScheduler(EchoFakeBackend(), max_batch=4, wait_ms=0)
    leases = LeaseKeeper(worker_runtime)
    watcher = sa.create_engine(settings.sqlalchemy_url)  # not counted: the test's own reads
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}", "Prefer": "wait=10"}

    def queued_job() -> str | None:
        with watcher.connect() as connection:
            return connection.scalar(
                sa.select(Job.id).where(Job.model == "cost-model", Job.status == "queued").limit(1)
            )

    def one_job(seed: int) -> dict[str, Any]:
        found: list[str] = []

        def work() -> None:
            wait_until(lambda: bool(found.append(queued_job() or "") or found[-1]), 10, "job")
            run_job(worker_runtime, scheduler, leases, found[-1])

        thread = threading.Thread(target=work)
        thread.start()
        response = client.post(
            "/v1/jobs",
            data={"question": f"is it red? ({seed})", "image": (io.BytesIO(png(seed)), "i.png")},
            headers=headers,
            content_type="multipart/form-data",
        )
        thread.join(timeout=10)
        assert response.status_code == 202, response.get_json()
        body: dict[str, Any] = response.get_json()
        return body

    try:
        with counting_redis(tally):
            # Two warm-up jobs: the first one's connection may be taken by the process's
            # job-end subscription, which starts on the first wait.
            for seed in (1, 2):
                assert one_job(seed)["status"] == "succeeded"
            tally.counting = True
            job = one_job(3)
            tally.counting = False
    finally:
        worker_runtime.close()
        watcher.dispose()
    statements, round_trips = len(tally.statements), sum(tally.round_trips.values())
    print(f"\none job: {statements} SQL statements {tally.statements}")
    print(f"one job: {round_trips} Redis round trips {dict(tally.round_trips)}")
    print(f"one job: {tally.rate_limit_round_trips} more for the rate limit")
    print(f"one job: {tally.task_event_round_trips} more for Celery's task events")
    assert job["status"] == "succeeded" and job["output"] == "yes" and not job["cache_hit"]
    assert statements <= MAX_STATEMENTS, tally.statements
    assert round_trips <= MAX_ROUND_TRIPS, tally.round_trips
    assert 0 < tally.rate_limit_round_trips <= MAX_RATE_LIMIT_ROUND_TRIPS
    assert tally.task_event_round_trips == TASK_EVENT_ROUND_TRIPS


@pytest.fixture(autouse=True)
def _no_pending_redis_patch() -> Iterator[None]:
    """The Redis counter is always removed, even when a test fails halfway."""
    original = redis.connection.AbstractConnection.send_packed_command
    yield
    redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
