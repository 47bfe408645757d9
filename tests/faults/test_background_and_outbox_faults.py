"""The background worker killed mid-delivery and mid-finalization, and a process that dies
between a state change's commit and its consequences: every event is still delivered (with
the same `webhook-id`), and a batch finalizes exactly once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.core import outbox
from services.core.inputs.prompts import CanonicalRequest, GenerationParams
from services.core.job_spec import JobSpec, SubmitOptions
from services.core.jobs.lifecycle import claim_job, finish_job
from services.core.runtime import Runtime
from services.core.submit import add_jobs, job_values
from services.core.tables import Batch, File, Job, Tenant
from services.core.webhooks.scheduling import event_delivery_id
from tests.conftest import redis_db_url
from tests.faults.stack import FaultStack, fault_stack, fresh_postgres_database, report
from tests.support import chat_batch_input, upload_batch_input, wait_until
from tests.webhook_receiver import Reply, WebhookReceiver

REDIS_URL = redis_db_url("faults")
TIMING = {
    "reconcile_interval_s": 1.0,
    "webhook_redeliver_after_s": 1.0,
    "batch_finalize_stale_s": 3.0,
}


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[FaultStack]:
    """A stack on a fresh PostgreSQL database, with one model worker running."""
    with (
        fresh_postgres_database() as database_url,
        fault_stack(tmp_path, database_url, REDIS_URL, **TIMING) as running,
    ):
        running.runtime.redis.flushdb()
        running.start_worker(VLMQ_FAKE_SLEEP_S="0.05")
        yield running


def test_background_worker_killed_in_the_middle_of_a_delivery(
    stack: FaultStack, receiver: WebhookReceiver
) -> None:
    first = stack.start_background()
    receiver.script("/hooks/slow", Reply(200, delay_s=0.8))
    status, body = stack.submit(
        "deliver me", webhook=receiver.url("/hooks/slow"), webhook_events_filter=["completed"]
    )
    assert status == 202
    receiver.wait_for("/hooks/slow", 1)
    first.kill()  # the POST is in flight: its outcome is never recorded
    killed_at = time.monotonic()
    stack.start_background()
    requests = receiver.wait_for("/hooks/slow", 2, timeout_s=60)
    ids = {request.headers["webhook-id"] for request in requests}
    payload = json.loads(requests[-1].body)
    report(
        "background_killed_mid_delivery",
        requests_received=len(requests),
        distinct_webhook_ids=len(ids),
        seconds_to_redeliver=round(requests[1].at - killed_at, 1),
    )
    assert len(ids) == 1
    assert payload["id"] == body["id"] and payload["status"] == "succeeded"


def batch_row(stack: FaultStack, batch_id: str) -> Batch:
    """The batch, read straight from the database."""
    with stack.runtime.sessions() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        return batch


def test_background_worker_killed_in_the_middle_of_finalization(
    stack: FaultStack, receiver: WebhookReceiver
) -> None:
    first = stack.start_background()
    created = stack.app.test_client().post(
        "/v1/batches",
        json={
            "input_file_id": upload_batch_input(
                stack.app.test_client(), stack.auth, chat_batch_input(300)
            ),
            "endpoint": "/v1/chat/completions",
            "webhook": receiver.url("/hooks/batch"),
        },
        headers=stack.auth,
    )
    assert created.status_code == 200, created.get_json()
    batch_id = created.get_json()["id"]
    seen: list[str] = []

    def finalizing() -> bool:
        seen.append(batch_row(stack, batch_id).status)
        return seen[-1] in ("finalizing", "completed")

    wait_until(finalizing, 120, "the batch to start finalizing", interval_s=0.005)
    first.kill()
    killed_while_finalizing = seen[-1] == "finalizing"
    stack.start_background()
    done = wait_until(
        lambda: (b := batch_row(stack, batch_id)).status == "completed" and b, 60, "completed"
    )
    output_file_id = done.output_file_id
    requests = receiver.wait_for("/hooks/batch", 1, timeout_s=30)
    time.sleep(2)  # a second finalization, if there were one, would show by now
    again = batch_row(stack, batch_id)
    with stack.runtime.sessions() as session:
        output_files = session.scalar(
            sa.select(sa.func.count()).where(File.filename == "batch_output.jsonl")
        )
    report(
        "background_killed_mid_finalization",
        killed_while_finalizing=killed_while_finalizing,
        lines=300,
        completed=done.completed,
        output_files=output_files,
        webhook_requests=len(requests),
        distinct_webhook_ids=len({r.headers["webhook-id"] for r in requests}),
    )
    assert done.completed == 300 and done.failed == 0
    assert again.output_file_id == output_file_id is not None
    assert output_files == 1
    assert len({r.headers["webhook-id"] for r in requests}) == 1


def process_killed_after_commit(_runtime: Runtime, _events: list[outbox.Recorded]) -> None:
    """A fake event hand-off: the process died right after the commit, so nothing follows."""


def test_events_of_a_process_killed_after_the_commit_are_delivered(
    stack: FaultStack, receiver: WebhookReceiver
) -> None:
    stack.start_background()
    dying = Runtime.create(stack.settings, on_events=process_killed_after_commit)
    webhook = receiver.url("/hooks/outbox")
    options = SubmitOptions(webhook=webhook, webhook_events=["start", "completed"])
    question = [{"role": "user", "content": [{"type": "text", "text": "orphaned events"}]}]
    try:
        # A process creates, claims and finishes a job (never queued, so no worker races
        # it), and dies after each commit, before any consequence: the outbox rows are all
        # that is left of the start and completed webhooks.
        with dying.unit_of_work() as session:
            tenant_id = session.scalar(sa.select(Tenant.id).where(Tenant.name == "faults"))
            assert tenant_id is not None
            request = CanonicalRequest(question, [])
            spec = JobSpec(request, GenerationParams(), options)
            job = Job(**job_values(stack.settings, tenant_id, spec))
            add_jobs(session, [job], [])
        with dying.unit_of_work() as session:
            claim = claim_job(session, stack.settings, job.id)
        assert claim is not None
        with dying.unit_of_work() as session:
            finish_job(session, claim, output="written", result={}, inference_ms=1.0)
    finally:
        dying.close()
    requests = receiver.wait_for("/hooks/outbox", 2, timeout_s=60)
    # A payload shows the job as it is when its event is carried out (here: succeeded for
    # both); the webhook ids tell the two events apart.
    expected = {event: event_delivery_id(job.id, event) for event in ("start", "completed")}
    received = {request.headers["webhook-id"] for request in requests}
    report(
        "outbox_after_commit_crash",
        events_expected=sorted(expected),
        delivered=sorted(event for event, msg_id in expected.items() if msg_id in received),
        requests=len(requests),
    )
    assert received == set(expected.values())
    assert all(json.loads(request.body)["id"] == job.id for request in requests)
