"""A flooding tenant in a process of its own: keeps the tenant's unfinished jobs at a level
until its stdin closes. The tests' own process answers the quiet tenant's HTTP calls, so a
flood run from a thread there would hold the GIL while it inserts jobs and delay exactly
the requests being measured; a real flooding client is another process.

    python -m tests.fairness.flooder TENANT_ID LEVEL '{"max_tokens": 48}'

Settings come from the environment (`tests.support.settings_env`).
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import sqlalchemy as sa

from services.core.bootstrap import create_runtime
from services.core.config import Settings
from services.core.requests.base import parse
from services.core.requests.jobs import JobCreateRequest
from services.core.runtime import Runtime
from services.core.submit import create_jobs, job_specs
from services.core.tables import UNFINISHED_STATUSES, Job
from tests.support import data_url, shape_png

IMAGE = data_url(shape_png("teal"))
# How often the level is topped up.
REFILL_EVERY_S = 0.25


def flood(runtime: Runtime, tenant_id: str, count: int, body: dict[str, Any]) -> list[str]:
    """Queue `count` jobs of the tenant at once, through the submit path's last step; their
    ids. Sampled with `ignore_eos`, so that no answer comes from the cache and every answer
    is as long as its `max_tokens`."""
    request = {
        "image": IMAGE,
        "question": "what color is the shape?",
        "temperature": 1.0,
        "ignore_eos": True,
        **body,
    }
    settings = runtime.settings
    with runtime.sessions() as session:
        [spec] = job_specs(session, settings, tenant_id, parse(JobCreateRequest, request, settings))
    return [job.id for job in create_jobs(runtime, tenant_id, [spec] * count)]


def unfinished(runtime: Runtime, tenant_id: str) -> int:
    """How many of the tenant's jobs have not ended."""
    with runtime.sessions() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count())
                .select_from(Job)
                .where(Job.tenant_id == tenant_id, Job.status.in_(UNFINISHED_STATUSES))
            )
            or 0
        )


def main() -> None:
    tenant_id, level, body = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    runtime = create_runtime(Settings())
    stopping = threading.Event()
    # The parent closes our stdin to stop us (or dies, which closes it too).
    threading.Thread(target=lambda: (sys.stdin.read(), stopping.set()), daemon=True).start()
    print("ready", flush=True)
    while not stopping.wait(REFILL_EVERY_S):
        missing = level - unfinished(runtime, tenant_id)
        if missing > 0:
            flood(runtime, tenant_id, missing, body)
    runtime.close()


if __name__ == "__main__":
    main()
