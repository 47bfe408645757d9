"""A job that got a 202 reaches a terminal state: worker killed, poison input, time limit,
Redis restarted empty. Each test runs its own worker on a queue of its own, with a fake
backend (these tests are about delivery, not the model)."""

from __future__ import annotations

import time

import pytest

from tests.fake_stack import FakeStack, job, submit, terminal
from tests.support import wait_until


@pytest.mark.fake_backend("SlowFakeBackend", lease_s=4, task_soft_time_limit_s=3)
def test_sigkilled_worker_job_still_succeeds_exactly_once(
    fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    first = fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="1.5")
    job_id = submit(fake_stack, auth, "survive a kill")
    wait_until(lambda: fake_stack.calls("start") == 1, 20, "the worker to start the job")
    assert job(fake_stack, auth, job_id)["status"] == "running"
    first.kill()
    assert fake_stack.calls("done") == 0

    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="1.5")
    done = terminal(fake_stack, auth, job_id)
    assert done["status"] == "succeeded"
    assert done["output"] == "echo: survive a kill"
    assert done["attempts"] == 2
    # Redelivery of the killed worker's message (and the maintenance pass) must not run it again.
    completed_at = done["completed_at"]
    wait_until(lambda: fake_stack.calls("done") >= 1, 5, "the call log")
    time.sleep(6)  # past the lease and a few maintenance passes
    again = job(fake_stack, auth, job_id)
    assert again["completed_at"] == completed_at and again["attempts"] == 2
    assert fake_stack.calls("done") == 1


@pytest.mark.fake_backend("CrashingFakeBackend", lease_s=2, max_attempts=2)
def test_poison_job_fails_after_the_attempt_cap(
    fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    fake_stack.start_worker()
    job_id = submit(fake_stack, auth)
    done = terminal(fake_stack, auth, job_id, timeout_s=90)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "worker_lost"
    assert fake_stack.calls("crash") == 2


@pytest.mark.fake_backend("SlowFakeBackend", task_soft_time_limit_s=1, lease_s=8)
def test_soft_time_limit_fails_the_job(fake_stack: FakeStack, auth: dict[str, str]) -> None:
    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="3")
    done = terminal(fake_stack, auth, submit(fake_stack, auth))
    assert done["status"] == "failed"
    assert done["error"]["type"] == "timeout"


@pytest.mark.fake_backend("SlowFakeBackend", requeue_after_s=2)
def test_job_survives_redis_restarting_empty(fake_stack: FakeStack, auth: dict[str, str]) -> None:
    job_id = submit(fake_stack, auth, "after the flood")
    # No worker yet: the message sits in Redis. Redis restarts and keeps nothing.
    fake_stack.runtime.redis.flushdb()
    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="0")
    done = terminal(fake_stack, auth, job_id)
    assert done["status"] == "succeeded" and done["output"] == "echo: after the flood"
