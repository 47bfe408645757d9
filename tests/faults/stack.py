"""A whole vlmq stack for one fault test: its own database and Redis (private servers where
the test stops them), the API in-process, real worker processes with a fake model."""

from __future__ import annotations

import collections
import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from flask import Flask

from services.api import create_app
from services.core.bootstrap import create_runtime
from services.core.config import Settings
from services.core.migrate import upgrade
from services.core.runtime import Runtime
from services.core.tables import Job
from tests.support import WorkerProcess, data_url, make_settings, shape_png
from tests.webhook_receiver import BackgroundWorkerProcess
from vlmq.cli import create_key

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TERMINAL = ("succeeded", "failed", "canceled")
# The production defaults of the lease and the maintenance pass, which the rest of the
# suite shortens.
DEFAULT_TIMING: dict[str, Any] = {
    "lease_s": 20,
    "reconcile_interval_s": 10.0,
    "requeue_after_s": 30.0,
}
# Figures each fault test prints at the end of the run (see tests/conftest.py).
FIGURES: list[str] = []


def report(test: str, **figures: object) -> None:
    """Keep a test's figures for the end-of-run summary, and print them."""
    line = f"{test}: " + ", ".join(f"{name}={value}" for name, value in figures.items())
    FIGURES.append(line)
    print(line)


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new empty database on the machine's PostgreSQL, dropped afterwards."""
    name = f"vlmq_faults_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def job_body(question: str, **extra: Any) -> dict[str, Any]:
    """The body of a job about a small image."""
    return {"image": data_url(shape_png()), "question": question, **extra}


@dataclass
class FaultStack:
    """The API app, an API key, and the processes of one test."""

    settings: Settings
    runtime: Runtime
    app: Flask
    auth: dict[str, str]
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    background: list[BackgroundWorkerProcess] = field(default_factory=list)

    @property
    def call_log(self) -> Path:
        """Where the fake model records its calls."""
        return self.tmp / "calls.log"

    def start_worker(self, **env: str) -> WorkerProcess:
        """A real `vlmq worker` (supervised) with the fake model; waits until it is ready."""
        env.setdefault("VLMQ_FAKE_CALL_LOG", str(self.call_log))
        name = f"worker-{len(self.workers)}.log"
        worker = WorkerProcess(self.settings, self.tmp / name, **env)
        self.workers.append(worker)
        return worker.wait_ready(self.runtime.redis)

    def start_background(self) -> BackgroundWorkerProcess:
        """A real `vlmq background-worker`; waits until it is ready."""
        name = f"background-{len(self.background)}.log"
        process = BackgroundWorkerProcess(self.settings, self.tmp / name)
        self.background.append(process)
        return process.wait_ready(self.runtime.redis)

    def submit(self, question: str, **extra: Any) -> tuple[int, dict[str, Any]]:
        """POST one job; returns the status code and the body."""
        response = self.app.test_client().post(
            "/v1/jobs", json=job_body(question, **extra), headers=self.auth
        )
        return response.status_code, response.get_json()

    def jobs(self, job_ids: list[str]) -> dict[str, Job]:
        """The rows of these jobs, read straight from the database."""
        found: dict[str, Job] = {}
        with self.runtime.sessions() as session:
            for start in range(0, len(job_ids), 500):
                chunk = job_ids[start : start + 500]
                found.update(
                    (job.id, job)
                    for job in session.scalars(sa.select(Job).where(Job.id.in_(chunk)))
                )
        return found

    def wait_terminal(self, job_ids: list[str], timeout_s: float) -> dict[str, Job]:
        """Block until every job is terminal; returns their rows. On a timeout the error
        names the jobs still unfinished, with their status, attempts and lease."""
        deadline = time.monotonic() + timeout_s
        while True:
            rows = self.jobs(job_ids)
            unfinished = [job for job in rows.values() if job.status not in TERMINAL]
            if len(rows) == len(job_ids) and not unfinished:
                return rows
            if time.monotonic() > deadline:
                detail = [(j.id, j.status, j.attempts, j.lease_expires_at) for j in unfinished]
                raise AssertionError(
                    f"{len(unfinished)} jobs unfinished after {timeout_s}s: {detail[:10]}"
                )
            time.sleep(0.5)

    def model_runs(self) -> collections.Counter[str]:
        """How many times the fake model answered each question to the end."""
        if not self.call_log.exists():
            return collections.Counter()
        return collections.Counter(
            line.split(" ")[1]
            for line in self.call_log.read_text().splitlines()
            if line.startswith("end ")
        )

    def close(self) -> None:
        """Stop every process and release connections."""
        for process in [*self.workers, *self.background]:
            process.stop()
        self.runtime.close()


@contextlib.contextmanager
def fault_stack(
    tmp: Path,
    database_url: str,
    redis_url: str,
    *,
    backend: str = "CountingFakeBackend",
    **overrides: Any,
) -> Iterator[FaultStack]:
    """A migrated stack on these servers, with the fake backend `backend`."""
    settings = make_settings(
        tmp,
        database_url,
        redis_url,
        tmp,
        backend=f"tests.fakes:{backend}",
        served_model_name=f"fault-{secrets.token_hex(3)}",
        **overrides,
    )
    upgrade(settings.sqlalchemy_url)
    key = create_key(settings, "faults", "fault tests")
    stack = FaultStack(
        settings,
        create_runtime(settings),
        create_app(settings),
        {"Authorization": f"Bearer {key}"},
        tmp,
    )
    try:
        yield stack
    finally:
        stack.close()


def elapsed_since(start: float) -> float:
    """Seconds since `start` (a time.monotonic() value), rounded."""
    return round(time.monotonic() - start, 1)
