"""A job that got a 202 reaches a terminal state: worker killed, poison input, time limit,
Redis restarted empty. Each test runs its own worker on a queue of its own, with a fake
backend (these tests are about delivery, not the model)."""

from __future__ import annotations

import time

import pytest

from services.api import create_app
from tests.fake_stack import FakeStack, job, submit, terminal
from tests.support import WorkerProcess, wait_until


@pytest.mark.slow
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


@pytest.mark.fake_backend("SlowFakeBackend", lease_s=2, task_soft_time_limit_s=30)
def test_a_live_job_longer_than_its_lease_runs_once(
    fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="5")
    done = terminal(fake_stack, auth, submit(fake_stack, auth, "a long one"))
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert fake_stack.calls("start") == 1


@pytest.mark.fake_backend("SlowFakeBackend", task_soft_time_limit_s=2, max_batch=1, lease_s=4)
def test_the_time_limit_does_not_count_time_queued_behind_other_calls(
    fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="1.2")
    ids = [submit(fake_stack, auth, f"in line {n}") for n in range(3)]
    finished = [terminal(fake_stack, auth, job_id) for job_id in ids]
    # One call at a time: the third waited ~2.4 s, past the limit, before its own 1.2 s call.
    assert [job["status"] for job in finished] == ["succeeded"] * 3


@pytest.mark.fake_backend("BrokenModelFakeBackend")
def test_a_worker_whose_model_cannot_load_takes_no_job(
    fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    job_id = submit(fake_stack, auth)
    worker = WorkerProcess(fake_stack.settings, fake_stack.tmp / "broken.log")
    fake_stack.workers.append(worker)
    wait_until(
        lambda: worker.log_path.read_text().count("event=child_died name=worker exit_code=3") >= 2,
        30,
        "the worker to exit twice with MODEL_LOAD_FAILED",
    )
    assert job(fake_stack, auth, job_id)["status"] == "queued"
    operator = create_app(fake_stack.settings.with_overrides(operator_token="operator"))
    ready = operator.test_client().get("/readyz", headers={"Authorization": "Bearer operator"})
    assert ready.status_code == 503
    assert "model.safetensors not found" in ready.get_json()["reasons"]["worker"]


@pytest.mark.fake_backend("SlowFakeBackend", lease_s=2, requeue_after_s=1)
def test_a_job_taken_by_a_worker_that_died_before_its_claim_runs(
    fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    job_id = submit(fake_stack, auth, "taken, never claimed")
    # What a worker does first, before it dies: take the job from the fair queue (leaving
    # its held mark, for `lease_s`), and claim nothing.
    picked = fake_stack.runtime.broker.fair.pick(
        allow_batch=True, chunk=1, batch_share=0.0, hold_s=fake_stack.settings.lease_s
    )
    assert picked is not None and picked.job_ids == [job_id]
    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="0")
    done = terminal(fake_stack, auth, job_id, timeout_s=30)
    assert done["status"] == "succeeded" and done["attempts"] == 1


@pytest.mark.fake_backend("SlowFakeBackend", requeue_after_s=1)
def test_a_job_whose_place_in_the_fair_queue_vanished_runs(
    fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    job_id = submit(fake_stack, auth, "queued, then forgotten by Redis")
    assert fake_stack.runtime.broker.fair.remove(job_id)
    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="0")
    done = terminal(fake_stack, auth, job_id, timeout_s=30)
    assert done["status"] == "succeeded" and done["attempts"] == 1
