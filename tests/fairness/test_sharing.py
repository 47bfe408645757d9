"""Fair sharing on real processes: a real worker running the tiny model, the API, Redis and
SQLite. One tenant's volume must not stall another's work; the figures each test measured
are printed with the fault suite's.

The floods go in through `create_jobs`, the submit path's own last step, so that keeping a
thousand jobs queued costs the test process little CPU beside the worker; the jobs whose
latency is measured go through the HTTP API.
"""

from __future__ import annotations

import io
import json
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from services.api import create_app
from services.core.batches.expand import expand_batch
from services.core.bootstrap import create_runtime
from services.core.config import Settings
from services.core.db import utcnow
from services.core.migrate import upgrade
from services.core.runtime import Runtime
from services.core.tables import UNFINISHED_STATUSES, Job, JobStatus
from services.core.tables import Tenant as TenantRow
from tests.conftest import redis_db_url
from tests.fairness import flooder
from tests.faults.stack import report
from tests.support import (
    REPO_ROOT,
    WorkerProcess,
    make_settings,
    settings_env,
    wait_until,
)
from tests.webhook_receiver import BackgroundWorkerProcess, WebhookReceiver
from vlmq.cli import create_key

IMAGE = flooder.IMAGE


@dataclass
class Stack:
    settings: Settings
    runtime: Runtime
    client: FlaskClient
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(self.settings, self.tmp / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        return worker.wait_ready(self.runtime.redis)

    def tenant(self, name: str) -> Tenant:
        unique = f"{name}-{secrets.token_hex(3)}"
        key = create_key(self.settings, unique, "fairness")
        with self.runtime.sessions() as session:
            tenant_id = session.scalar(sa.select(TenantRow.id).where(TenantRow.name == unique))
        return Tenant(self, str(tenant_id), {"Authorization": f"Bearer {key}"})


@dataclass
class Tenant:
    stack: Stack
    id: str
    auth: dict[str, str]

    def flood(self, count: int, **body: Any) -> list[str]:
        """Queue `count` jobs at once; their ids."""
        return flooder.flood(self.stack.runtime, self.id, count, body)

    def unfinished(self) -> int:
        return flooder.unfinished(self.stack.runtime, self.id)

    def ask(self, **body: Any) -> tuple[float, dict[str, Any]]:
        """One job through the API, answered in the same call; its latency and body."""
        started = time.perf_counter()
        response = self.stack.client.post(
            "/v1/jobs",
            json={
                "image": IMAGE,
                "question": "what color is the shape?",
                "temperature": 1.0,
                "max_tokens": 2,
                **body,
            },
            headers={**self.auth, "Prefer": "wait=30"},
        )
        took = time.perf_counter() - started
        assert response.status_code == 202, response.get_json()
        job = response.get_json()
        assert job["status"] == "succeeded", job
        return took, job


class Refill:
    """Keeps a tenant's unfinished jobs at `level` until stopped (a tenant flooding its
    quota, honouring it), from a process of its own (see `tests.fairness.flooder`)."""

    def __init__(self, tenant: Tenant, level: int, **body: Any) -> None:
        self.tenant, self.level, self.body = tenant, level, body
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Refill:
        self.tenant.flood(self.level, **self.body)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fairness.flooder", self.tenant.id, str(self.level)]
            + [json.dumps(self.body)],
            cwd=REPO_ROOT,
            env=settings_env(self.tenant.stack.settings),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *_: object) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture()
def stack(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Stack]:
    database_url = f"sqlite:///{tmp_path / 'vlmq.db'}"
    upgrade(database_url)
    redis_url = redis_db_url("fairness")
    settings = make_settings(
        tmp_path,
        database_url,
        redis_url,
        tiny_model_dir,
        served_model_name=f"fair-{secrets.token_hex(3)}",
        max_queue_wait_s=0,
    )
    runtime = create_runtime(settings)
    runtime.redis.flushdb()
    built = Stack(settings, runtime, create_app(settings).test_client(), tmp_path)
    try:
        yield built
    finally:
        for worker in built.workers:
            worker.stop()
        runtime.close()


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def tokens_served(stack: Stack, since: datetime, until: datetime) -> dict[str, int]:
    """Tokens (prompt plus completion) of each tenant's jobs that finished in the window."""
    with stack.runtime.sessions() as session:
        rows = session.execute(
            sa.select(Job.tenant_id, Job.result, Job.batch_id).where(
                Job.status == JobStatus.SUCCEEDED.value,
                Job.completed_at >= since,
                Job.completed_at < until,
            )
        ).all()
    served: dict[str, int] = {}
    for tenant_id, result, batch_id in rows:
        usage = (result or {}).get("usage") or {}
        key = f"batch:{tenant_id}" if batch_id else tenant_id
        served[key] = served.get(key, 0) + usage.get("total_tokens", 0)
    return served


def window(seconds: float) -> tuple[datetime, datetime]:
    start = utcnow()
    time.sleep(seconds)
    return start, utcnow()


def all_ended(stack: Stack, ids: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        with stack.runtime.sessions() as session:
            left = session.scalar(
                sa.select(sa.func.count())
                .select_from(Job)
                .where(Job.id.in_(ids), Job.status.in_(UNFINISHED_STATUSES))
            )
        return left == 0

    return check


# The quiet tenant's jobs timed alone and again under the flood.
SAMPLES = 100


def test_a_quiet_tenant_is_not_held_behind_a_flood(stack: Stack) -> None:
    stack.start_worker()
    quiet, flooder = stack.tenant("quiet"), stack.tenant("flooder")
    for _ in range(3):
        quiet.ask()  # warm-up
    # 100 samples, so that the p99 is not one sample's worst (a lone scheduling hiccup on a
    # 2-core host), but the tail of many.
    alone = [quiet.ask()[0] for _ in range(SAMPLES)]
    with Refill(flooder, 1000, max_tokens=48):
        wait_until(lambda: flooder.unfinished() >= 1000, 30, "the flood to be queued")
        time.sleep(1.0)  # the worker is saturated
        flooded = [quiet.ask()[0] for _ in range(SAMPLES)]
        still_queued = flooder.unfinished()
    p50_ratio = statistics.median(flooded) / statistics.median(alone)
    p99_ratio = percentile(flooded, 99) / percentile(alone, 99)
    report(
        "quiet_tenant_behind_flood",
        alone_p50_ms=round(statistics.median(alone) * 1000, 1),
        alone_p99_ms=round(percentile(alone, 99) * 1000, 1),
        flooded_p50_ms=round(statistics.median(flooded) * 1000, 1),
        flooded_p99_ms=round(percentile(flooded, 99) * 1000, 1),
        p50_ratio=round(p50_ratio, 2),
        p99_ratio=round(p99_ratio, 2),
        flooder_unfinished=still_queued,
    )
    assert still_queued >= 900  # the flood really was there throughout
    # The targets are 2x and 3x (docs/benchmarks.md has the figures of each run); the
    # margin absorbs a 2-core host where this process, the worker and the flood share the
    # CPU.
    # Before fair queuing, the same jobs waited behind the whole flood: 840x.
    assert p50_ratio <= 2.5
    assert p99_ratio <= 5.0


def test_backlogged_tenants_share_tokens_whatever_their_answer_lengths(stack: Stack) -> None:
    stack.start_worker()
    terse, verbose = stack.tenant("terse"), stack.tenant("verbose")
    with Refill(terse, 300, max_tokens=3), Refill(verbose, 100, max_tokens=48):
        time.sleep(2.0)
        since, until = window(8.0)
    served = tokens_served(stack, since, until)
    ratio = served.get(terse.id, 0) / max(1, served.get(verbose.id, 0))
    report(
        "token_fairness_16x_lengths",
        terse_tokens=served.get(terse.id, 0),
        verbose_tokens=served.get(verbose.id, 0),
        ratio=round(ratio, 2),
    )
    assert 1 / 1.5 <= ratio <= 1.5


def test_a_weight_2_tenant_gets_twice_the_service(stack: Stack) -> None:
    stack.start_worker()
    gold, plain = stack.tenant("gold"), stack.tenant("plain")
    subprocess.run(
        [sys.executable, "-m", "vlmq.cli", "tenants", "set", "--weight", "2", gold.id],
        cwd=REPO_ROOT,
        env=settings_env(stack.settings),
        check=True,
        capture_output=True,
        timeout=60,
    )
    listed = subprocess.run(
        [sys.executable, "-m", "vlmq.cli", "tenants", "list"],
        cwd=REPO_ROOT,
        env=settings_env(stack.settings),
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert gold.id in listed
    with Refill(gold, 200, max_tokens=16), Refill(plain, 200, max_tokens=16):
        time.sleep(2.0)
        since, until = window(8.0)
    served = tokens_served(stack, since, until)
    ratio = served.get(gold.id, 0) / max(1, served.get(plain.id, 0))
    report(
        "weights_2_to_1",
        gold_tokens=served.get(gold.id, 0),
        plain_tokens=served.get(plain.id, 0),
        ratio=round(ratio, 2),
    )
    assert 1.6 <= ratio <= 2.4


def test_a_priority_job_overtakes_a_thousand_queued_jobs(stack: Stack) -> None:
    stack.start_worker()
    urgent, flooder = stack.tenant("urgent"), stack.tenant("flooder")
    flooder.flood(1000, max_tokens=16)
    wait_until(lambda: flooder.unfinished() < 990, 60, "the flood to be running")
    _, job = urgent.ask(service_tier="priority")
    queued_ms = job["metrics"]["queue_ms"]
    with stack.runtime.sessions() as session:
        calls = [
            (row or {}).get("inference_ms", 0.0)
            for row in session.scalars(
                sa.select(Job.metrics).where(
                    Job.tenant_id == flooder.id, Job.status == JobStatus.SUCCEEDED.value
                )
            )
        ]
    one_call_ms = statistics.median(calls)
    report(
        "priority_overtakes_1000",
        priority_queue_ms=round(queued_ms, 1),
        flood_job_model_ms_p50=round(one_call_ms, 1),
        flood_left=flooder.unfinished(),
        service_tier=job["service_tier"],
    )
    assert job["service_tier"] == "priority"
    assert flooder.unfinished() > 500
    assert queued_ms <= one_call_ms


def test_batch_lines_keep_a_share_under_saturating_interactive_load(stack: Stack) -> None:
    stack.start_worker()
    bulk, busy = stack.tenant("bulk"), stack.tenant("busy")
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": IMAGE}},
                    {"type": "text", "text": "what color?"},
                ],
            }
        ],
        "max_tokens": 16,
        "ignore_eos": True,
        "temperature": 1.0,
    }
    lines = "\n".join(
        json.dumps(
            {"custom_id": f"l{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
        for n in range(400)
    )
    upload = stack.client.post(
        "/v1/files",
        data={"purpose": "batch", "file": (io.BytesIO(lines.encode()), "in.jsonl")},
        headers=bulk.auth,
        content_type="multipart/form-data",
    )
    assert upload.status_code == 200, upload.get_json()
    with Refill(busy, 500, max_tokens=16):
        time.sleep(1.0)
        created = stack.client.post(
            "/v1/batches",
            json={"input_file_id": upload.get_json()["id"], "endpoint": "/v1/chat/completions"},
            headers=bulk.auth,
        )
        assert created.status_code == 200, created.get_json()
        # Expanded here: this stack runs no background worker.
        expand_batch(stack.runtime, created.get_json()["id"])
        time.sleep(2.0)
        since, until = window(8.0)
    served = tokens_served(stack, since, until)
    batch_tokens = served.get(f"batch:{bulk.id}", 0)
    share = batch_tokens / max(1, sum(served.values()))
    report(
        "batch_share_under_load",
        batch_tokens=batch_tokens,
        interactive_tokens=served.get(busy.id, 0),
        share=round(share, 3),
    )
    assert share >= 0.10


def test_a_job_past_max_queue_ms_expires_and_never_runs(stack: Stack) -> None:
    stack.start_worker()
    webhooks = BackgroundWorkerProcess(stack.settings, stack.tmp / "webhooks.log")
    webhooks.wait_ready(stack.runtime.redis)
    patient, flooder = stack.tenant("patient"), stack.tenant("flooder")
    receiver = WebhookReceiver()
    try:
        flooder.flood(600, max_tokens=16)
        response = stack.client.post(
            "/v1/jobs",
            json={
                "image": IMAGE,
                "question": "what color is the shape?",
                "service_tier": "flex",
                "max_queue_ms": 300,
                "webhook": receiver.url("/hook"),
            },
            headers=patient.auth,
        )
        assert response.status_code == 202
        job_id = response.get_json()["id"]
        assert response.get_json()["service_tier"] == "flex"

        def ended() -> dict[str, Any] | None:
            body = stack.client.get(f"/v1/jobs/{job_id}", headers=patient.auth).get_json()
            return body if body["status"] != "queued" else None

        job = wait_until(ended, 30, "the job to expire")
        sync = stack.client.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "what color?"}],
                "service_tier": "flex",
                "max_queue_ms": 200,
            },
            headers=patient.auth,
        )
        assert sync.status_code == 429, sync.get_json()
        assert sync.get_json()["error"]["code"] == "queue_deadline_exceeded"
        wait_until(lambda: receiver.requests("/hook"), 30, "the webhook")
        event = json.loads(receiver.requests("/hook")[-1].body)
    finally:
        receiver.close()
        webhooks.stop()
    report("max_queue_ms", status=job["status"], attempts=job["attempts"], webhook=event["status"])
    assert event["id"] == job_id and event["status"] == "expired"
    assert job["status"] == "expired"
    assert job["attempts"] == 0 and job["started_at"] is None
    assert "max_queue_ms" in job["error"]["message"]


def test_queued_jobs_show_their_band_and_position(stack: Stack) -> None:
    waiting = stack.tenant("waiting")
    ids = waiting.flood(5, max_tokens=4)
    last = stack.client.get(f"/v1/jobs/{ids[-1]}", headers=waiting.auth).get_json()
    assert last["status"] == "queued" and last["queue_position"] == 4
    assert last["service_tier"] == "default"
    canceled = stack.client.post(f"/v1/jobs/{ids[0]}/cancel", headers=waiting.auth).get_json()
    assert canceled["status"] == "canceled" and canceled["queue_position"] is None
    moved = stack.client.get(f"/v1/jobs/{ids[-1]}", headers=waiting.auth).get_json()
    assert moved["queue_position"] == 3


def test_two_workers_one_killed_mid_flood_every_job_ends_once(stack: Stack) -> None:
    # A lease shorter than the default: the killed worker's jobs come back after 12 s, not
    # 30 (the production timing is tests/faults/test_model_worker_faults.py's subject).
    stack.settings = stack.settings.with_overrides(lease_s=8)
    first = stack.start_worker()
    stack.start_worker()
    tenants = [stack.tenant("left"), stack.tenant("right")]
    ids = [job_id for tenant in tenants for job_id in tenant.flood(120, max_tokens=8)]
    wait_until(
        lambda: sum(tenant.unfinished() for tenant in tenants) < 180, 60, "a quarter of the flood"
    )
    killed_pid = first.kill_worker()
    wait_until(all_ended(stack, ids), 180, "every job to end")
    with stack.runtime.sessions() as session:
        rows = session.execute(sa.select(Job.status, Job.attempts).where(Job.id.in_(ids))).all()
    statuses = {status for status, _ in rows}
    rerun = sum(1 for _, attempts in rows if attempts > 1)
    report(
        "two_workers_sigkill_mid_flood",
        jobs=len(rows),
        statuses=sorted(statuses),
        rerun_after_kill=rerun,
        killed_pid=killed_pid,
    )
    assert len(rows) == len(ids) and statuses == {"succeeded"}
    assert max(attempts for _, attempts in rows) <= 2
