"""A stack with a fake backend on a queue of its own: for tests about delivery, not the model."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from services.api import create_app
from services.core.bootstrap import create_runtime
from services.core.config import Settings
from services.core.runtime import Runtime
from tests.support import WorkerProcess, data_url, make_settings, shape_png, wait_until


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


def fake_stack_fixture(
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
    runtime = create_runtime(settings)
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
    """Submit a job to the stack; returns its id."""
    response = stack.client.post(
        "/v1/jobs", json={"image": data_url(shape_png()), "question": question}, headers=auth
    )
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"])


def job(stack: FakeStack, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    """The job object, as polled."""
    return dict(stack.client.get(f"/v1/jobs/{job_id}", headers=auth).get_json())


def terminal(
    stack: FakeStack, auth: dict[str, str], job_id: str, timeout_s: float = 60
) -> dict[str, Any]:
    """Poll until the job is terminal."""
    return wait_until(
        lambda: (
            (j := job(stack, auth, job_id))["status"] in ("succeeded", "failed", "canceled") and j
        ),
        timeout_s,
        f"job {job_id} terminal",
        interval_s=0.2,
    )
