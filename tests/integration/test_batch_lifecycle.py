"""A batch ends exactly once, whatever races it: conditional transitions, expiry from every
unfinished state, a finalizer that died, the line cap before any job, a cancel during
expansion, and a webhook for a batch that fails early.

The states a batch passes through in milliseconds are set up directly in the database, and
the domain's own functions (the ones the background worker runs) are called on them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from services.core.auth import get_or_create_tenant
from services.core.batches import finalize
from services.core.batches.expand import MAX_EXPAND_ATTEMPTS, expand_batch
from services.core.batches.finalize import advance_batch
from services.core.db import utcnow
from services.core.errors import ServiceUnavailableError
from services.core.ids import new_id
from services.core.runtime import Runtime
from services.core.tables import Batch, File, Job, JobStatus
from tests.support import all_lookups_taken, chat_batch_input, upload_batch_input, wait_until
from tests.webhook_receiver import WebhookReceiver


def tenant_id(runtime: Runtime, name: str = "acme") -> str:
    """The id of the tenant called `name` (created if it is new)."""
    with runtime.sessions.begin() as session:
        return get_or_create_tenant(session, name).id


def make_batch(
    runtime: Runtime,
    status: str,
    *,
    jobs: Sequence[str] = (),
    expired: bool = False,
    **fields: Any,
) -> str:
    """A batch row in `status` (its window passed if `expired`), with jobs in these statuses."""
    now = utcnow()
    owner = tenant_id(runtime)
    with runtime.sessions.begin() as session:
        file_id = "file-" + new_id("f").removeprefix("f_")
        session.add(File(id=file_id, tenant_id=owner, purpose="batch", filename="in.jsonl"))
        batch = Batch(
            id=new_id("batch"),
            tenant_id=owner,
            endpoint="/v1/chat/completions",
            input_file_id=file_id,
            completion_window="24h",
            status=status,
            metadata_={},
            created_at=now,
            expires_at=now - timedelta(seconds=1) if expired else now + timedelta(hours=24),
            **fields,
        )
        session.add(batch)
        for n, job_status in enumerate(jobs):
            session.add(line_job(batch, job_status, n))
        return batch.id


def line_job(batch: Batch, status: str, n: int = 0) -> Job:
    """A line's job of `batch`, in `status`, that no worker takes."""
    now = utcnow()
    return Job(
        id=new_id("job"),
        tenant_id=batch.tenant_id,
        kind="chat",
        model="not-served",
        messages=[],
        params={},
        status=status,
        output="ok" if status == JobStatus.SUCCEEDED else None,
        batch_id=batch.id,
        custom_id=f"line-{n}",
        metrics={},
        metadata_={},
        attempts=0,
        created_at=now,
        completed_at=now if status != JobStatus.QUEUED else None,
    )


def read_batch(runtime: Runtime, batch_id: str) -> Batch:
    """The batch row as it is now."""
    with runtime.sessions() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        return batch


def job_statuses(runtime: Runtime, batch_id: str) -> list[str]:
    """The statuses of the batch's jobs."""
    with runtime.sessions() as session:
        return sorted(session.scalars(sa.select(Job.status).where(Job.batch_id == batch_id)))


@pytest.mark.parametrize("status", ["validating", "in_progress"])
def test_an_overdue_batch_expires_and_its_queued_lines_are_canceled(
    runtime: Runtime, status: str
) -> None:
    batch_id = make_batch(runtime, status, jobs=["queued", "succeeded"], expired=True)
    advance_batch(runtime, batch_id)
    batch = read_batch(runtime, batch_id)
    assert batch.status == "expired" and batch.expired_at is not None
    assert job_statuses(runtime, batch_id) == ["canceled", "succeeded"]
    assert (batch.completed, batch.failed) == (1, 1)


def test_a_cancelled_batch_past_its_window_ends_cancelled(runtime: Runtime) -> None:
    batch_id = make_batch(
        runtime, "cancelling", jobs=["canceled"], expired=True, cancelling_at=utcnow()
    )
    advance_batch(runtime, batch_id)
    assert read_batch(runtime, batch_id).status == "cancelled"


def test_a_finalizing_batch_past_its_window_completes(runtime: Runtime) -> None:
    # Its lines are all done: the finalization under way closes it as completed.
    batch_id = make_batch(
        runtime,
        "finalizing",
        jobs=["succeeded"],
        expired=True,
        finalizing_at=utcnow() - timedelta(hours=1),
    )
    advance_batch(runtime, batch_id)
    batch = read_batch(runtime, batch_id)
    assert batch.status == "completed" and batch.output_file_id is not None


def test_a_batch_left_finalizing_by_a_dead_finalizer_is_finalized(runtime: Runtime) -> None:
    fresh = make_batch(runtime, "finalizing", jobs=["succeeded"], finalizing_at=utcnow())
    advance_batch(runtime, fresh)
    assert read_batch(runtime, fresh).status == "finalizing"  # its finalizer may be alive
    stale_at = utcnow() - timedelta(seconds=runtime.settings.batch_finalize_stale_s + 1)
    stale = make_batch(runtime, "finalizing", jobs=["succeeded"], finalizing_at=stale_at)
    advance_batch(runtime, stale)
    assert read_batch(runtime, stale).status == "completed"


def test_concurrent_progress_checks_finalize_once(runtime: Runtime) -> None:
    batch_id = make_batch(runtime, "in_progress", jobs=["succeeded"] * 20 + ["failed"] * 5)
    start = threading.Barrier(4)

    def check() -> None:
        start.wait()
        advance_batch(runtime, batch_id)

    threads = [threading.Thread(target=check) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batch = read_batch(runtime, batch_id)
    assert batch.status == "completed"
    with runtime.sessions() as session:
        result_files = session.scalar(
            sa.select(sa.func.count()).where(
                File.tenant_id == batch.tenant_id,
                File.created_at >= batch.created_at,
                File.filename.in_(["batch_output.jsonl", "batch_errors.jsonl"]),
            )
        )
    assert result_files == 2  # one output and one error file: the losers' files are gone
    advance_batch(runtime, batch_id)
    assert read_batch(runtime, batch_id).output_file_id == batch.output_file_id


def test_a_check_that_read_the_batch_validating_does_not_finalize_it(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check reads the batch `validating` and counts no line; before it writes, the
    # expansion commits the lines and starts the batch. Counts read before the lines existed
    # must not finalize a batch that has lines still to run.
    batch_id = make_batch(runtime, "validating")
    counted_before_the_lines = finalize.job_counts

    def counts_then_the_expansion_commits(session: Any, counted_id: str) -> dict[str, int]:
        counts = counted_before_the_lines(session, counted_id)
        with runtime.sessions.begin() as expansion:
            batch = expansion.get(Batch, batch_id)
            assert batch is not None
            expansion.add(line_job(batch, "queued"))
            batch.status, batch.total = "in_progress", 1
        return counts

    monkeypatch.setattr(finalize, "job_counts", counts_then_the_expansion_commits)
    advance_batch(runtime, batch_id)
    assert read_batch(runtime, batch_id).status == "in_progress"
    monkeypatch.undo()
    advance_batch(runtime, batch_id)  # the next check counts the line, still queued
    batch = read_batch(runtime, batch_id)
    assert batch.status == "in_progress" and (batch.completed, batch.failed) == (0, 0)


def test_the_line_cap_is_checked_before_any_job_exists(
    client: FlaskClient, auth: dict[str, str], runtime: Runtime
) -> None:
    file_id = upload_batch_input(client, auth, b"x\n" * 50_001)
    response = client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
        headers=auth,
    )
    assert response.status_code == 400
    assert "50000" in response.get_json()["error"]["message"]
    with runtime.sessions() as session:
        assert session.scalar(sa.select(Batch).where(Batch.input_file_id == file_id)) is None


def test_a_cancel_during_validation_stops_the_expansion(
    client: FlaskClient, auth: dict[str, str], runtime: Runtime
) -> None:
    batch_id = make_batch(runtime, "validating")
    file_id = upload_batch_input(client, auth, chat_batch_input(250))
    with runtime.sessions.begin() as session:
        session.execute(sa.update(Batch).where(Batch.id == batch_id).values(input_file_id=file_id))
    cancelled = client.post(f"/v1/batches/{batch_id}/cancel", headers=auth)
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelling"
    expand_batch(runtime, batch_id)  # what the background worker would run next
    assert job_statuses(runtime, batch_id) == []

    def cancelled() -> bool:
        # The progress check the cancel sent may be finalizing it in a background worker.
        advance_batch(runtime, batch_id)
        return read_batch(runtime, batch_id).status == "cancelled"

    wait_until(cancelled, 30, "the batch to end cancelled", interval_s=0.2)


@pytest.mark.usefixtures("background_worker")
def test_a_batch_that_fails_early_sends_its_webhook(
    client: FlaskClient, auth: dict[str, str], receiver: WebhookReceiver
) -> None:
    file_id = upload_batch_input(client, auth, b"\n\n")
    created = client.post(
        "/v1/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "webhook": receiver.url("/hooks/failed-batch"),
        },
        headers=auth,
    ).get_json()
    [request] = receiver.wait_for("/hooks/failed-batch", 1, timeout_s=60)
    payload = json.loads(request.body)
    assert payload["id"] == created["id"] and payload["status"] == "failed"


@pytest.mark.usefixtures("worker", "background_worker")
def test_a_custom_id_over_200_characters_fails_its_line_alone(
    client: FlaskClient, auth: dict[str, str], runtime: Runtime
) -> None:
    lines = chat_batch_input(2).splitlines()
    long_line = json.loads(lines[0])
    long_line["custom_id"] = "x" * 300
    raw = json.dumps(long_line).encode() + b"\n" + lines[1] + b"\n"
    created = client.post(
        "/v1/batches",
        json={
            "input_file_id": upload_batch_input(client, auth, raw),
            "endpoint": "/v1/chat/completions",
        },
        headers=auth,
    ).get_json()
    batch = wait_until(
        lambda: (b := read_batch(runtime, created["id"])).status == "completed" and b,
        90,
        "the batch to complete",
    )
    assert (batch.total, batch.completed, batch.failed) == (2, 1, 1)


def test_no_fetch_capacity_delays_an_expansion_without_failing_it(
    client: FlaskClient, auth: dict[str, str], runtime: Runtime
) -> None:
    batch_id = make_batch(runtime, "validating")
    line = {
        "custom_id": "remote",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/a.png"}},
                        {"type": "text", "text": "what color?"},
                    ],
                }
            ]
        },
    }
    file_id = upload_batch_input(client, auth, (json.dumps(line) + "\n").encode())
    with runtime.sessions.begin() as session:
        session.execute(sa.update(Batch).where(Batch.id == batch_id).values(input_file_id=file_id))
    with all_lookups_taken():
        for _ in range(MAX_EXPAND_ATTEMPTS + 1):
            with pytest.raises(ServiceUnavailableError):
                expand_batch(runtime, batch_id)
    # Not counted against the batch: it waits to be expanded again.
    assert read_batch(runtime, batch_id).status == "validating"
    assert runtime.redis.get(f"vlmq:batch-expand-attempts:{batch_id}") is None
    expand_batch(runtime, batch_id)
    # Expanded now; its one line fails alone (nothing listens on port 9).
    assert read_batch(runtime, batch_id).status != "validating"
    assert job_statuses(runtime, batch_id) == ["failed"]


def test_a_batch_is_counted_from_its_status_index_alone(runtime: Runtime) -> None:
    # A progress check runs every half second of a batch's run: reading each line's row
    # for its status costs a check time in proportion to the batch's size.
    batch_id = make_batch(runtime, "in_progress", jobs=["succeeded", "failed", "queued"])
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    engine = runtime.engine
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        with runtime.sessions() as session:
            counts = finalize.job_counts(session, batch_id)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    assert counts == {"succeeded": 1, "failed": 1, "queued": 1}
    ((statement, parameters),) = statements
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = " ".join(
                str(row[-1])
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            )
            assert "USING COVERING INDEX ix_jobs_batch_status" in plan, plan
        else:
            # A table this small is read whole if the planner may; the index must serve.
            # Whether PostgreSQL then reads the index alone or also visits the rows depends
            # on how recently the table was vacuumed (its visibility map), not on the query.
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = " ".join(
                str(row[0]) for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters)
            )
            assert "on ix_jobs_batch_status" in plan or "using ix_jobs_batch_status" in plan, plan
