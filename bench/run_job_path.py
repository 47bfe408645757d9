"""The modules one job passes through in the worker, from claim to `succeeded`, how many
function calls it makes into each, and the CPU the worker spends per job besides the model.

Runs `workers.pipeline.run_job` in-process on one cacheable job (a fake echo backend, a
temporary SQLite database, a Redis database of its own) and prints every vlmq module
whose functions were called, so a change that makes the path longer shows up here. Then
runs `--jobs` more jobs one after another and prints the CPU per job of everything the
worker does for a job that is not the model (claim, cache check, inputs, finish, cache
write, wake-up, the logs), median of `--rounds` rounds.

    .venv/bin/python -m bench.run_job_path [--redis-url redis://127.0.0.1:6379/14] [--jobs 300]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import structlog.testing

import services.core.maintenance  # noqa: F401  (imported up front: only calls are counted)
from services.core.auth import get_or_create_tenant
from services.core.bootstrap import create_runtime
from services.core.config import Settings
from services.core.inputs.prompts import CanonicalRequest, GenerationParams
from services.core.job_spec import JobSpec
from services.core.migrate import upgrade
from services.core.runtime import Runtime
from services.core.submit import submit_job
from services.core.tables import Job
from tests.fakes import EchoFakeBackend
from workers.leases import LeaseKeeper
from workers.pipeline import run_job
from workers.schedulers import Scheduler, StaticScheduler

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--jobs", type=int, default=300, help="jobs per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite:///{tmp / 'vlmq.db'}"
    upgrade(url)
    settings = Settings(_env_file=None, data_dir=tmp, database_url=url, redis_url=args.redis_url)  # type: ignore[call-arg]
    runtime = create_runtime(settings)
    runtime.redis.flushdb()
    with runtime.unit_of_work() as session:
        tenant_id = get_or_create_tenant(session, "bench").id
    job = new_job(runtime, tenant_id, "is it red?")
    runtime.redis.flushdb()  # drop the queue message: run_job is called by hand below
    scheduler = StaticScheduler(EchoFakeBackend(), max_batch=4, wait_ms=0)
    calls: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, _arg: Any) -> None:
        path = frame.f_code.co_filename
        if event == "call" and path.startswith(str(REPO)) and "/.venv/" not in path:
            calls[str(Path(path).relative_to(REPO))] += 1

    sys.setprofile(profile)
    threading.setprofile(profile)
    outcome = run_job(runtime, scheduler, LeaseKeeper(runtime), job.id)
    sys.setprofile(None)
    threading.setprofile(None)  # type: ignore[arg-type]
    calls.pop(str(Path(__file__).relative_to(REPO)), None)
    print(f"run_job -> {outcome}; modules passed through: {len(calls)}")
    print(f"{'function calls':>16}  module")
    for module, count in sorted(calls.items()):
        print(f"{count:>16}  {module}")
    rounds = [cpu_ms_per_job(runtime, scheduler, tenant_id, args.jobs) for _ in range(args.rounds)]
    text = ", ".join(f"{ms:.2f}" for ms in rounds)
    print(
        f"worker CPU per job besides the model: {statistics.median(rounds):.2f} ms "
        f"(median of {args.rounds} rounds of {args.jobs} jobs: {text})"
    )
    runtime.close()


def new_job(runtime: Runtime, tenant_id: str, text: str) -> Job:
    """A queued job asking `text` (no image)."""
    question = [{"role": "user", "content": [{"type": "text", "text": text}]}]
    return submit_job(
        runtime, tenant_id, JobSpec(CanonicalRequest(question, []), GenerationParams())
    )


def cpu_ms_per_job(runtime: Runtime, scheduler: Scheduler, tenant_id: str, jobs: int) -> float:
    """CPU milliseconds per job of `run_job` on `jobs` new jobs, run one after another."""
    # Each a question of its own: a repeated one would be answered by the cache at submit.
    ids = [
        new_job(runtime, tenant_id, f"is it red? ({secrets.token_hex(4)})").id for _ in range(jobs)
    ]
    runtime.redis.flushdb()  # the queue's entries: run_job is called by hand
    leases = LeaseKeeper(runtime)
    with structlog.testing.capture_logs():  # the job lines are not what is measured
        started = time.process_time()
        outcomes = [run_job(runtime, scheduler, leases, job_id) for job_id in ids]
        used = time.process_time() - started
    assert outcomes == ["succeeded"] * jobs, outcomes
    return used * 1000 / jobs


if __name__ == "__main__":
    main()
