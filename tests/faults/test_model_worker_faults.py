"""The model worker killed with jobs in flight, and a backlog longer than the re-queue
threshold: every accepted job succeeds exactly once, quickly, and nothing is re-sent that
was merely waiting."""

from __future__ import annotations

import re
import time
from pathlib import Path

import redis

from tests.conftest import redis_db_url
from tests.faults.stack import (
    DEFAULT_TIMING,
    elapsed_since,
    fault_stack,
    fresh_postgres_database,
    report,
)
from tests.support import wait_until

REDIS_URL = redis_db_url("faults")


def test_sigkill_of_the_model_worker_with_100_jobs_in_flight(tmp_path: Path) -> None:
    redis.Redis.from_url(REDIS_URL).flushdb()
    with (
        fresh_postgres_database() as database_url,
        fault_stack(tmp_path, database_url, REDIS_URL, **DEFAULT_TIMING) as stack,
    ):
        worker = stack.start_worker(VLMQ_FAKE_SLEEP_S="1.0")
        ids = []
        for n in range(100):
            status, body = stack.submit(f"kill-{n}")
            assert status == 202, body
            ids.append(body["id"])
        wait_until(lambda: stack.model_runs(), 30, "the first model call to end")
        running = sum(1 for job in stack.jobs(ids).values() if job.status == "running")
        worker.kill_worker()
        killed_at = time.monotonic()
        rows = stack.wait_terminal(ids, timeout_s=90)
        recovery_s = elapsed_since(killed_at)
        runs = stack.model_runs()
        succeeded = [job for job in rows.values() if job.status == "succeeded"]
        wrong = [
            job.id
            for job in succeeded
            if job.output != f"echo: {job.messages[0]['content'][1]['text']}"
        ]
        rerun = sum(1 for n in range(100) if runs[f"kill-{n}"] > 1)
        report(
            "sigkill_model_worker",
            jobs=100,
            running_at_kill=running,
            succeeded=len(succeeded),
            wrong_answers=len(wrong),
            model_reruns=rerun,
            seconds_to_recover=recovery_s,
        )
        assert len(succeeded) == 100 and not wrong
        assert recovery_s <= 60


def test_a_backlog_longer_than_the_requeue_threshold_is_sent_once(tmp_path: Path) -> None:
    redis.Redis.from_url(REDIS_URL).flushdb()
    timing = {"requeue_after_s": 2.0, "reconcile_interval_s": 1.0, "max_batch": 4}
    with fault_stack(tmp_path, f"sqlite:///{tmp_path / 'vlmq.db'}", REDIS_URL, **timing) as stack:
        worker = stack.start_worker(VLMQ_FAKE_SLEEP_S="0.1")
        started = time.monotonic()
        ids = [stack.submit(f"backlog-{n}")[1]["id"] for n in range(300)]
        fair = stack.runtime.broker.fair
        queue_lengths = []

        def drained() -> bool:
            queue_lengths.append(fair.units(chunk=1))
            return all(job.status == "succeeded" for job in stack.jobs(ids).values())

        wait_until(drained, 120, "the backlog to drain", interval_s=0.2)
        backlog_s = elapsed_since(started)
        # Each job run once, and none queued again while the jobs merely waited.
        runs = len(re.findall(r"event=job_done ", worker.log_path.read_text()))
        attempts = {job.attempts for job in stack.jobs(ids).values()}
        report(
            "backlog",
            jobs=len(ids),
            backlog_seconds=backlog_s,
            requeue_after_s=timing["requeue_after_s"],
            runs_per_job=round(runs / len(ids), 3),
            max_queue_length=max(queue_lengths),
        )
        assert backlog_s > 3 * timing["requeue_after_s"]
        # A waiting job was never queued again (it would then run about once more for every
        # 2 s of the backlog).
        assert runs == len(ids)
        assert attempts == {1}
        assert max(queue_lengths) <= len(ids)
