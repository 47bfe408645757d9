"""Redis restarting empty and PostgreSQL stopped under load: outages answer 503 with
Retry-After (never another 5xx), and every accepted job finishes once they are back."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import redis_db_url
from tests.faults.servers import PrivatePostgres, PrivateRedis
from tests.faults.stack import (
    elapsed_since,
    fault_stack,
    fresh_postgres_database,
    job_body,
    report,
)

OUTAGE_S = 25


@pytest.fixture()
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis of this test's own."""
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


@pytest.fixture()
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this test's own."""
    server = PrivatePostgres()
    yield server
    server.remove()


def test_redis_flushed_and_restarted_with_1000_jobs_queued_or_running(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    timing = {"requeue_after_s": 5.0, "reconcile_interval_s": 2.0}
    with (
        fresh_postgres_database() as database_url,
        fault_stack(tmp_path, database_url, private_redis.url, **timing) as stack,
    ):
        # A model call of 0.8 s (about 20 jobs/s): a backlog builds up while 1000 are sent.
        stack.start_worker(VLMQ_FAKE_SLEEP_S="0.8")
        ids = []
        for n in range(1000):
            status, body = stack.submit(f"flush-{n}")
            assert status == 202, body
            ids.append(body["id"])
        unfinished = sum(1 for job in stack.jobs(ids).values() if job.status != "succeeded")
        private_redis.flush_and_restart()
        restarted_at = time.monotonic()
        rows = stack.wait_terminal(ids, timeout_s=150)
        succeeded = sum(1 for job in rows.values() if job.status == "succeeded")
        report(
            "redis_flush_restart",
            jobs=1000,
            unfinished_at_flush=unfinished,
            succeeded=succeeded,
            seconds_to_finish=elapsed_since(restarted_at),
        )
        assert unfinished > 100  # the flush hit a real backlog
        assert succeeded == 1000


def test_postgres_stopped_under_load(tmp_path: Path, private_postgres: PrivatePostgres) -> None:
    redis_url = redis_db_url("faults")
    timing = {"reconcile_interval_s": 2.0, "requeue_after_s": 5.0, "lease_s": 6}
    with fault_stack(tmp_path, private_postgres.url, redis_url, **timing) as stack:
        stack.runtime.redis.flushdb()
        stack.start_worker(VLMQ_FAKE_SLEEP_S="0.2")
        accepted: list[str] = []
        statuses: collections.Counter[int] = collections.Counter()
        missing_retry_after = 0
        stop = threading.Event()
        lock = threading.Lock()

        def load(thread: int) -> None:
            nonlocal missing_retry_after
            client = stack.app.test_client()
            n = 0
            while not stop.is_set():
                n += 1
                body = job_body(f"pg-{thread}-{n}")
                submitted = client.post("/v1/jobs", json=body, headers=stack.auth)
                polled = client.get("/v1/jobs?limit=5", headers=stack.auth)
                with lock:
                    for response in (submitted, polled):
                        statuses[response.status_code] += 1
                        if response.status_code == 503 and "Retry-After" not in response.headers:
                            missing_retry_after += 1
                    if submitted.status_code == 202:
                        accepted.append(submitted.get_json()["id"])
                time.sleep(0.05)

        threads = [threading.Thread(target=load, args=(t,), daemon=True) for t in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(3)  # load before, during and after the outage, for these lengths
        private_postgres.stop()
        private_postgres.wait_stopped()
        time.sleep(OUTAGE_S)
        private_postgres.start()
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        back_at = time.monotonic()
        rows = stack.wait_terminal(accepted, timeout_s=120)
        other_5xx = sum(count for code, count in statuses.items() if code >= 500 and code != 503)
        lost = sum(1 for job in rows.values() if job.status != "succeeded")
        report(
            "postgres_stopped",
            outage_s=OUTAGE_S,
            responses=dict(sorted(statuses.items())),
            other_5xx=other_5xx,
            accepted=len(accepted),
            lost=lost,
            seconds_to_finish_after_return=elapsed_since(back_at),
        )
        assert statuses[503] > 0  # the outage was seen
        assert other_5xx == 0
        assert missing_retry_after == 0
        assert lost == 0
