"""A job that got a 202 reaches a terminal state: worker killed, poison input, time limit,
Redis restarted empty. Each test runs its own worker on a queue of its own, with a fake
backend (these tests are about delivery, not the model)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from services.api import create_app
from services.core.config import Settings
from services.core.runtime import Runtime
from tests.conftest import make_settings
from tests.support import WorkerProcess, data_url, shape_png, wait_until


@dataclass
class FakeStack:
    """An API client and a factory of workers, all on one private queue."""

    settings: Settings
    runtime: Runtime
    client: FlaskClient
    call_log: Path
    tmp: Path
    workers: list[WorkerProcess]

    def start_worker(self, **env: str) -> WorkerProcess:
        env.setdefault("VLMQ_FAKE_CALL_LOG", str(self.call_log))
        worker = WorkerProcess(self.settings, self.tmp / f"worker-{len(self.workers)}.log", **env)
        self.workers.append(worker)
        return worker.wait_ready(self.runtime.redis)

    def calls(self, event: str) -> int:
        if not self.call_log.exists():
            return 0
        return sum(1 for line in self.call_log.read_text().splitlines() if line.startswith(event))


@pytest.fixture()
def fake_stack(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str, redis_url: str, api_key: str
) -> Iterator[FakeStack]:
    """A stack whose backend is named by the test's `fake_backend` marker."""
    marker = request.node.get_closest_marker("fake_backend")
    backend_class, overrides = marker.args[0], marker.kwargs
    settings = make_settings(
        tmp_path,
        database_url,
        redis_url,
        tmp_path,
        backend=f"tests.fakes:{backend_class}",
        served_model_name=f"fake-{secrets.token_hex(3)}",
        **overrides,
    )
    runtime = Runtime.create(settings)
    stack = FakeStack(
        settings, runtime, create_app(settings).test_client(), tmp_path / "calls.log", tmp_path, []
    )
    try:
        yield stack
    finally:
        for worker in stack.workers:
            worker.stop()
        runtime.close()


def submit(stack: FakeStack, auth: dict[str, str], question: str = "what color?") -> str:
    response = stack.client.post(
        "/v1/jobs", json={"image": data_url(shape_png()), "question": question}, headers=auth
    )
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"])


def job(stack: FakeStack, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    return dict(stack.client.get(f"/v1/jobs/{job_id}", headers=auth).get_json())


def terminal(
    stack: FakeStack, auth: dict[str, str], job_id: str, timeout_s: float = 60
) -> dict[str, Any]:
    return wait_until(
        lambda: (
            (j := job(stack, auth, job_id))["status"] in ("succeeded", "failed", "canceled") and j
        ),
        timeout_s,
        f"job {job_id} terminal",
        interval_s=0.2,
    )


@pytest.mark.fake_backend(
    "SlowFakeBackend", lease_s=4, task_soft_time_limit_s=3, task_time_limit_s=4
)
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
    # Redelivery of the killed worker's message (and the reconciler) must not run it again.
    completed_at = done["completed_at"]
    wait_until(lambda: fake_stack.calls("done") >= 1, 5, "the call log")
    time.sleep(6)  # past the lease and a few reconciler passes
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


@pytest.mark.fake_backend(
    "SlowFakeBackend", task_soft_time_limit_s=1, task_time_limit_s=5, lease_s=8
)
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
