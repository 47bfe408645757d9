"""Retention: the pruning pass deletes what the settings no longer keep, in bounded chunks,
and never what a live job or batch still needs; files expire as OpenAI's `expires_after`
and `output_expires_after` say.

Rows are made old by writing old timestamps, never by waiting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from services.core import maintenance, retention
from services.core.auth import create_api_key, get_or_create_tenant
from services.core.batches.finalize import finalize_batch
from services.core.db import Base, utcnow
from services.core.ids import new_id
from services.core.inputs.images import CheckedImage
from services.core.runtime import Runtime
from services.core.submit import store_images
from services.core.tables import (
    Batch,
    File,
    FileChunk,
    IdempotencyKey,
    Image,
    Job,
    OutboxEvent,
    ScorePolicy,
    WebhookAttempt,
    WebhookDelivery,
)

DAY = timedelta(days=1)
# Older than every default retention (30 days).
LONG_AGO = timedelta(days=40)


@pytest.fixture(autouse=True)
def no_background_pruning(runtime: Runtime) -> Iterator[None]:
    """Hold the pruning pass of the stack's workers off while these tests prune (their
    counts would otherwise race it)."""
    runtime.redis.set(maintenance.PRUNE_LOCK, b"1", ex=600)
    yield
    runtime.redis.delete(maintenance.PRUNE_LOCK)


@dataclasses.dataclass(frozen=True)
class Owner:
    """A tenant of its own for one test (other tests leave batches of their tenants
    unfinished, which keep those tenants' files), and its Authorization header."""

    tenant_id: str
    auth: dict[str, str]


@pytest.fixture()
def owner(runtime: Runtime) -> Owner:
    """A fresh tenant with an API key."""
    name = f"retention-{secrets.token_hex(4)}"
    with runtime.sessions.begin() as session:
        key = create_api_key(session, name, "tests")
        tenant_id = get_or_create_tenant(session, name).id
    return Owner(tenant_id, {"Authorization": f"Bearer {key}"})


@pytest.fixture()
def held_prune_lock(runtime: Runtime) -> Iterator[None]:
    """Keep the maintenance pass of any worker process sharing this database from pruning
    while the test stores old rows and prunes them itself (the test holds the deployment's
    prune lock, as a pass that just ran would)."""
    runtime.redis.set(maintenance.PRUNE_LOCK, b"test", ex=120)
    yield
    runtime.redis.delete(maintenance.PRUNE_LOCK)


def add(runtime: Runtime, *rows: Base) -> None:
    """Store rows in one transaction."""
    with runtime.sessions.begin() as session:
        session.add_all(rows)


def exists(runtime: Runtime, model: type[Base], key: Any) -> bool:
    """Whether the row with this primary key is still there."""
    with runtime.sessions() as session:
        return session.get(model, key) is not None


def image_part(sha256: str) -> dict[str, Any]:
    """One user message about the image with this hash, as jobs store it."""
    content = [{"type": "image", "sha256": sha256}, {"type": "text", "text": "what color?"}]
    return {"role": "user", "content": content}


def a_job(
    tenant_id: str,
    status: str,
    *,
    age: timedelta = timedelta(0),
    images: tuple[str, ...] = (),
    kind: str = "chat",
    **fields: Any,
) -> Job:
    """A job `age` old (finished then too, if `status` is terminal) that no worker serves."""
    at = utcnow() - age
    return Job(
        id=new_id("job"),
        tenant_id=tenant_id,
        kind=kind,
        model="not-served",
        messages=[image_part(sha256) for sha256 in images],
        params={},
        status=status,
        output="ok" if status == "succeeded" else None,
        metrics={},
        metadata_={},
        attempts=0,
        created_at=at,
        completed_at=None if status in ("queued", "running") else at,
        **fields,
    )


def an_image(age: timedelta = timedelta(0)) -> Image:
    """An image row (bytes unique to the test) stored `age` ago."""
    data = secrets.token_bytes(16)
    return Image(
        sha256=hashlib.sha256(data).hexdigest(),
        media_type="image/png",
        width=1,
        height=1,
        byte_size=len(data),
        data=data,
        created_at=utcnow() - age,
    )


def a_file(
    tenant_id: str, *, expires_at: datetime | None, purpose: str = "batch", chunks: int = 1
) -> tuple[File, list[FileChunk]]:
    """A file row with `chunks` chunk rows."""
    file = File(
        id="file-" + secrets.token_hex(12),
        tenant_id=tenant_id,
        purpose=purpose,
        filename="in.jsonl",
        bytes=chunks,
        created_at=utcnow(),
        expires_at=expires_at,
    )
    return file, [FileChunk(file_id=file.id, seq=seq, data=b"x") for seq in range(chunks)]


def a_batch(tenant_id: str, input_file_id: str, status: str, **fields: Any) -> Batch:
    """A batch row in `status`."""
    fields.setdefault("created_at", utcnow())
    return Batch(
        id=new_id("batch"),
        tenant_id=tenant_id,
        endpoint="/v1/chat/completions",
        input_file_id=input_file_id,
        completion_window="24h",
        status=status,
        metadata_={},
        **fields,
    )


def a_delivery(tenant_id: str, status: str, age: timedelta, attempts: int) -> WebhookDelivery:
    """A webhook delivery that ended (or, pending, was made) `age` ago."""
    at = utcnow() - age
    return WebhookDelivery(
        id=new_id("wh"),
        tenant_id=tenant_id,
        event="completed",
        url="http://127.0.0.1:9/hook",
        payload={},
        status=status,
        attempts=attempts,
        created_at=at,
        completed_at=None if status == "pending" else at,
    )


def attempts_of(delivery: WebhookDelivery) -> list[WebhookAttempt]:
    """The delivery's attempt rows."""
    return [
        WebhookAttempt(delivery_id=delivery.id, attempt=n, status_code=500, latency_ms=1.0)
        for n in range(1, delivery.attempts + 1)
    ]


def count_attempts(runtime: Runtime, delivery_id: str) -> int:
    """How many attempt rows the delivery still has."""
    with runtime.sessions() as session:
        query = sa.select(sa.func.count()).where(WebhookAttempt.delivery_id == delivery_id)
        return int(session.scalar(query) or 0)


def with_settings(runtime: Runtime, **changes: object) -> Runtime:
    """The same connections under changed settings."""
    return dataclasses.replace(runtime, settings=runtime.settings.with_overrides(**changes))


@contextmanager
def deleted_rows_per_statement(engine: Engine) -> Iterator[list[int]]:
    """The rows each DELETE statement on `engine` deleted, while the block runs."""
    counts: list[int] = []

    def record(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            counts.append(cursor.rowcount)

    sa.event.listen(engine, "after_cursor_execute", record)
    try:
        yield counts
    finally:
        sa.event.remove(engine, "after_cursor_execute", record)


def test_a_pruned_job_answers_404_and_a_kept_one_does_not(
    runtime: Runtime, client: FlaskClient, owner: Owner
) -> None:
    old = a_job(owner.tenant_id, "succeeded", age=LONG_AGO)
    failed = a_job(owner.tenant_id, "failed", age=LONG_AGO)
    canceled = a_job(owner.tenant_id, "canceled", age=LONG_AGO)
    recent = a_job(owner.tenant_id, "succeeded", age=29 * DAY)
    add(runtime, old, failed, canceled, recent)

    # 0 keeps jobs for ever.
    retention.prune(with_settings(runtime, job_retention_s=0))
    assert client.get(f"/v1/jobs/{old.id}", headers=owner.auth).status_code == 200

    retention.prune(runtime)
    for pruned in (old, failed, canceled):
        response = client.get(f"/v1/jobs/{pruned.id}", headers=owner.auth)
        assert response.status_code == 404
        assert response.get_json()["error"]["type"] == "not_found_error"
    assert (
        client.get(f"/v1/jobs/{recent.id}", headers=owner.auth).get_json()["status"] == "succeeded"
    )


def test_unstored_responses_go_soon_after_they_end_and_stored_ones_stay(
    runtime: Runtime, owner: Owner
) -> None:
    ended = timedelta(seconds=runtime.settings.unstored_response_retention_s + 60)
    unstored = a_job(
        owner.tenant_id, "succeeded", age=ended, kind="response", response={"store": False}
    )
    stored = a_job(
        owner.tenant_id, "succeeded", age=ended, kind="response", response={"store": True}
    )
    just_ended = a_job(owner.tenant_id, "succeeded", kind="response", response={"store": False})
    running = a_job(
        owner.tenant_id, "running", age=ended, kind="response", response={"store": False}
    )
    add(runtime, unstored, stored, just_ended, running)
    retention.prune(runtime)
    with runtime.sessions() as session:
        left = set(session.scalars(sa.select(Job.id).where(Job.tenant_id == owner.tenant_id)))
    assert unstored.id not in left
    assert {stored.id, just_ended.id, running.id} <= left


def test_unfinished_jobs_and_their_images_are_kept(runtime: Runtime, owner: Owner) -> None:
    used, finished_with, unused = (an_image(LONG_AGO) for _ in range(3))
    fresh = an_image(timedelta(0))
    queued = a_job(owner.tenant_id, "queued", age=LONG_AGO, images=(used.sha256,))
    running = a_job(owner.tenant_id, "running", age=LONG_AGO, images=(used.sha256,))
    done = a_job(owner.tenant_id, "succeeded", age=timedelta(0), images=(finished_with.sha256,))
    add(runtime, used, finished_with, unused, fresh, queued, running, done)

    retention.prune(runtime)

    assert exists(runtime, Job, queued.id) and exists(runtime, Job, running.id)
    assert exists(runtime, Image, used.sha256)
    # A finished job needs its images no more: they go once they are old.
    assert exists(runtime, Job, done.id) and not exists(runtime, Image, finished_with.sha256)
    assert not exists(runtime, Image, unused.sha256)
    assert exists(runtime, Image, fresh.sha256)

    with runtime.sessions.begin() as session:
        session.execute(
            sa.update(Job)
            .where(Job.id.in_([queued.id, running.id]))
            .values(status="canceled", completed_at=utcnow())
        )
    retention.prune(runtime)
    assert not exists(runtime, Image, used.sha256)


def test_an_image_reused_by_a_submission_while_it_is_pruned_is_kept(
    runtime: Runtime, owner: Owner
) -> None:
    old = an_image(LONG_AGO)
    add(runtime, old)
    reused = CheckedImage(old.data, old.sha256, old.media_type, old.width, old.height)
    job = a_job(owner.tenant_id, "queued", images=(old.sha256,))
    found: list[int] = []
    # A submission in flight: the image is reused ("insert unless it exists") and the job
    # is written, but not yet committed, when the pruner reads what unfinished jobs use.
    with runtime.sessions() as submission:
        store_images(submission, [reused])
        submission.add(job)
        submission.flush()
        pruner = threading.Thread(target=lambda: found.append(retention.prune_images(runtime)))
        pruner.start()
        pruner.join(timeout=0.5)
        assert pruner.is_alive(), "the pruner waits for the submission in flight"
        submission.commit()
    pruner.join(timeout=30)
    assert not pruner.is_alive()
    assert exists(runtime, Image, old.sha256)

    with runtime.sessions.begin() as session:
        session.execute(
            sa.update(Job).where(Job.id == job.id).values(status="succeeded", completed_at=utcnow())
        )
    retention.prune_images(runtime)
    assert not exists(runtime, Image, old.sha256)


def test_an_unfinished_batch_keeps_its_lines_and_files(
    runtime: Runtime, client: FlaskClient, owner: Owner
) -> None:
    long_ago = utcnow() - LONG_AGO
    expired = utcnow() - DAY
    # The stack's workers share this database and check unfinished batches: these are
    # left as they are (within their window, one line still running on a model nobody
    # serves, a finalizer at work), so only the pruning under test can touch them.
    running_input, running_input_chunks = a_file(owner.tenant_id, expires_at=expired)
    running = a_batch(owner.tenant_id, running_input.id, "in_progress")
    lines = [
        a_job(owner.tenant_id, status, age=LONG_AGO, batch_id=running.id)
        for status in ("succeeded", "failed", "running")
    ]
    final_input, final_input_chunks = a_file(owner.tenant_id, expires_at=expired)
    finalizing = a_batch(owner.tenant_id, final_input.id, "finalizing", finalizing_at=utcnow())
    output, output_chunks = a_file(owner.tenant_id, expires_at=expired, purpose="batch_output")
    add(runtime, running_input, running, final_input, finalizing, output)
    add(runtime, *running_input_chunks, *final_input_chunks, *output_chunks, *lines)

    retention.prune(runtime)

    for batch in (running, finalizing):
        assert client.get(f"/v1/batches/{batch.id}", headers=owner.auth).status_code == 200
    assert all(exists(runtime, Job, line.id) for line in lines)
    for file in (running_input, final_input, output):
        assert exists(runtime, File, file.id)
        assert exists(runtime, FileChunk, (file.id, 0))

    # Once the batches ended (long ago), they go with their lines and their expired files.
    with runtime.sessions.begin() as session:
        session.execute(
            sa.update(Batch)
            .where(Batch.id.in_([running.id, finalizing.id]))
            .values(status="completed", completed_at=long_ago)
        )
        session.execute(
            sa.update(Job)
            .where(Job.batch_id == running.id, Job.status == "running")
            .values(status="canceled", completed_at=long_ago)
        )
    retention.prune(runtime)
    for batch in (running, finalizing):
        assert client.get(f"/v1/batches/{batch.id}", headers=owner.auth).status_code == 404
    assert not any(exists(runtime, Job, line.id) for line in lines)
    assert not any(exists(runtime, File, file.id) for file in (running_input, final_input, output))


def test_a_terminal_batch_goes_with_its_lines_only_once_it_is_old(
    runtime: Runtime, client: FlaskClient, owner: Owner
) -> None:
    input_file, _ = a_file(owner.tenant_id, expires_at=None)
    old = a_batch(owner.tenant_id, input_file.id, "completed", completed_at=utcnow() - LONG_AGO)
    # Its lines finished long ago, but the batch ended only lately: they stay with it.
    recent = a_batch(owner.tenant_id, input_file.id, "cancelled", cancelled_at=utcnow() - DAY)
    old_lines = [
        a_job(owner.tenant_id, "succeeded", age=LONG_AGO, batch_id=old.id) for _ in range(3)
    ]
    recent_lines = [
        a_job(owner.tenant_id, "canceled", age=LONG_AGO, batch_id=recent.id) for _ in range(2)
    ]
    add(runtime, input_file, old, recent)
    add(runtime, *old_lines, *recent_lines)

    retention.prune(runtime)

    assert client.get(f"/v1/batches/{old.id}", headers=owner.auth).status_code == 404
    assert not any(exists(runtime, Job, line.id) for line in old_lines)
    assert client.get(f"/v1/batches/{recent.id}", headers=owner.auth).status_code == 200
    assert all(exists(runtime, Job, line.id) for line in recent_lines)
    assert exists(runtime, File, input_file.id)


def test_rows_an_outbox_event_still_names_are_kept(runtime: Runtime, owner: Owner) -> None:
    job = a_job(owner.tenant_id, "succeeded", age=LONG_AGO)
    input_file, _ = a_file(owner.tenant_id, expires_at=None)
    batch = a_batch(owner.tenant_id, input_file.id, "completed", completed_at=utcnow() - LONG_AGO)
    events = [
        OutboxEvent(kind="job_finished", data={"job_id": job.id}, created_at=utcnow()),
        OutboxEvent(kind="batch_finished", data={"batch_id": batch.id}, created_at=utcnow()),
    ]
    add(runtime, job, input_file, batch, *events)

    retention.prune(runtime)
    assert exists(runtime, Job, job.id) and exists(runtime, Batch, batch.id)

    with runtime.sessions.begin() as session:
        session.execute(sa.delete(OutboxEvent).where(OutboxEvent.id.in_([e.id for e in events])))
    retention.prune(runtime)
    assert not exists(runtime, Job, job.id) and not exists(runtime, Batch, batch.id)


def upload(client: FlaskClient, auth: dict[str, str], **fields: str) -> Any:
    """POST a one-line batch input file with extra form fields."""
    data: dict[str, Any] = {"purpose": "batch", "file": (io.BytesIO(b"{}\n"), "input.jsonl")}
    return client.post(
        "/v1/files", data={**data, **fields}, headers=auth, content_type="multipart/form-data"
    )


def test_an_upload_expires_as_expires_after_says(
    runtime: Runtime, client: FlaskClient, owner: Owner
) -> None:
    asked = upload(
        client,
        owner.auth,
        **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"},
    )
    assert asked.status_code == 200, asked.get_json()
    file = asked.get_json()
    assert file["expires_at"] == file["created_at"] + 3600

    default = upload(client, owner.auth).get_json()
    assert default["expires_at"] == default["created_at"] + runtime.settings.file_retention_s

    bad = [
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "3599"}, "seconds"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"}, "seconds"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "soon"}, "seconds"),
        ({"expires_after[anchor]": "created_at"}, "seconds"),
        ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"}, "anchor"),
        ({"expires_after[seconds]": "3600"}, "anchor"),
    ]
    for fields, part in bad:
        response = upload(client, owner.auth, **fields)
        assert response.status_code == 400, fields
        error = response.get_json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == f"expires_after[{part}]"

    # Past its expiry a file is gone at once, and the pass deletes it with its chunks.
    with runtime.sessions.begin() as session:
        session.execute(
            sa.update(File).where(File.id == file["id"]).values(expires_at=utcnow() - DAY)
        )
    assert client.get(f"/v1/files/{file['id']}", headers=owner.auth).status_code == 404
    assert client.get(f"/v1/files/{file['id']}/content", headers=owner.auth).status_code == 404
    assert client.get(f"/v1/files/{default['id']}", headers=owner.auth).status_code == 200
    retention.prune(runtime)
    assert not exists(runtime, File, file["id"]) and not exists(runtime, FileChunk, (file["id"], 0))
    assert exists(runtime, File, default["id"])


def test_batch_result_files_expire_as_output_expires_after_says(
    runtime: Runtime, client: FlaskClient, owner: Owner
) -> None:
    input_id = upload(client, owner.auth).get_json()["id"]
    body = {"input_file_id": input_id, "endpoint": "/v1/chat/completions"}
    for policy, param in [
        ({"anchor": "created_at", "seconds": 60}, "output_expires_after[seconds]"),
        ({"anchor": "completed_at", "seconds": 3600}, "output_expires_after[anchor]"),
        ({"anchor": "created_at"}, "output_expires_after"),
    ]:
        response = client.post(
            "/v1/batches", json={**body, "output_expires_after": policy}, headers=owner.auth
        )
        assert response.status_code == 400, policy
        assert response.get_json()["error"]["param"] == param
    policy = {"anchor": "created_at", "seconds": 7200}
    created = client.post(
        "/v1/batches", json={**body, "output_expires_after": policy}, headers=owner.auth
    )
    assert created.status_code == 200, created.get_json()
    batch_id = created.get_json()["id"]
    with runtime.sessions() as session:
        stored = session.get(Batch, batch_id)
    assert stored is not None and stored.output_expires_after_s == 7200
    assert client.post(f"/v1/batches/{batch_id}/cancel", headers=owner.auth).status_code == 200

    # Result files get the batch's policy when they are written, or the file retention.
    expiring = a_batch(owner.tenant_id, input_id, "finalizing", output_expires_after_s=7200)
    default = a_batch(owner.tenant_id, input_id, "finalizing")
    add(runtime, expiring, default)
    add(runtime, a_job(owner.tenant_id, "succeeded", batch_id=expiring.id, custom_id="a"))
    add(runtime, a_job(owner.tenant_id, "failed", batch_id=default.id, custom_id="b"))
    finalize_batch(runtime, expiring.id)
    finalize_batch(runtime, default.id)
    output_id = client.get(f"/v1/batches/{expiring.id}", headers=owner.auth).get_json()[
        "output_file_id"
    ]
    errors_id = client.get(f"/v1/batches/{default.id}", headers=owner.auth).get_json()[
        "error_file_id"
    ]
    output = client.get(f"/v1/files/{output_id}", headers=owner.auth).get_json()
    errors = client.get(f"/v1/files/{errors_id}", headers=owner.auth).get_json()
    assert output["expires_at"] == output["created_at"] + 7200
    assert errors["expires_at"] == errors["created_at"] + runtime.settings.file_retention_s

    with runtime.sessions.begin() as session:
        session.execute(
            sa.update(File).where(File.id == output_id).values(expires_at=utcnow() - DAY)
        )
    retention.prune(runtime)
    assert client.get(f"/v1/files/{output_id}", headers=owner.auth).status_code == 404
    assert not exists(runtime, File, output_id) and exists(runtime, File, errors_id)


def test_expired_idempotency_keys_go_and_live_ones_stay(runtime: Runtime, owner: Owner) -> None:
    def key(expires_in: timedelta) -> IdempotencyKey:
        return IdempotencyKey(
            tenant_id=owner.tenant_id,
            key=secrets.token_hex(8),
            fingerprint="0" * 64,
            object_id=new_id("job"),
            created_at=utcnow(),
            expires_at=utcnow() + expires_in,
        )

    expired, live = key(-timedelta(seconds=1)), key(DAY)
    add(runtime, expired, live)
    retention.prune(runtime)
    assert not exists(runtime, IdempotencyKey, expired.id)
    assert exists(runtime, IdempotencyKey, live.id)


def test_ended_webhook_deliveries_go_with_their_attempts(runtime: Runtime, owner: Owner) -> None:
    old_ended = [
        a_delivery(owner.tenant_id, status, LONG_AGO, 2)
        for status in ("delivered", "failed", "gone")
    ]
    pending = a_delivery(owner.tenant_id, "pending", LONG_AGO, 1)
    recent = a_delivery(owner.tenant_id, "delivered", DAY, 1)
    deliveries = [*old_ended, pending, recent]
    add(runtime, *deliveries)
    add(runtime, *(attempt for delivery in deliveries for attempt in attempts_of(delivery)))

    retention.prune(runtime)

    for delivery in old_ended:
        assert not exists(runtime, WebhookDelivery, delivery.id)
        assert count_attempts(runtime, delivery.id) == 0
    for delivery in (pending, recent):
        assert exists(runtime, WebhookDelivery, delivery.id)
        assert count_attempts(runtime, delivery.id) == 1


@pytest.mark.usefixtures("held_prune_lock")
def test_pruning_deletes_in_bounded_chunks_over_several_passes(
    runtime: Runtime, owner: Owner
) -> None:
    small = with_settings(runtime, prune_chunk=2)
    jobs = [a_job(owner.tenant_id, "succeeded", age=LONG_AGO) for _ in range(9)]
    images = [an_image(LONG_AGO) for _ in range(5)]
    file, chunks = a_file(owner.tenant_id, expires_at=utcnow() - DAY, chunks=5)
    deliveries = [a_delivery(owner.tenant_id, "delivered", LONG_AGO, 3) for _ in range(3)]
    add(runtime, *jobs, *images, file, *deliveries)
    add(
        runtime, *chunks, *(attempt for delivery in deliveries for attempt in attempts_of(delivery))
    )

    def left() -> int:
        return sum(
            [
                sum(exists(runtime, Job, job.id) for job in jobs),
                sum(exists(runtime, Image, image.sha256) for image in images),
                exists(runtime, File, file.id),
                sum(exists(runtime, WebhookDelivery, delivery.id) for delivery in deliveries),
            ]
        )

    passes = 0
    with deleted_rows_per_statement(runtime.engine) as per_statement:
        while left():
            counts = retention.prune(small, max_chunks=2)
            passes += 1
            assert all(rows <= 4 for rows in counts.values()), counts
            assert passes < 20, "pruning makes progress"
    assert per_statement and max(per_statement) <= 2
    # 9 jobs at 2 rows a chunk and 2 chunks a pass take 3 passes at least.
    assert passes >= 3


def test_the_maintenance_pass_prunes_once_a_minute(
    runtime: Runtime, owner: Owner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process's passes take a lock of their own: the stack's workers stay held off by
    # the deployment's lock, so none of their passes can take this test's turn to prune.
    monkeypatch.setattr(maintenance, "PRUNE_LOCK", f"vlmq:prune-lock:{secrets.token_hex(4)}")
    job = a_job(owner.tenant_id, "succeeded", age=LONG_AGO)
    add(runtime, job)
    maintenance.run_pass(runtime)
    assert not exists(runtime, Job, job.id)

    again = a_job(owner.tenant_id, "succeeded", age=LONG_AGO)
    add(runtime, again)
    assert maintenance.prune_if_due(runtime) == {}
    assert exists(runtime, Job, again.id)
    runtime.redis.delete(maintenance.PRUNE_LOCK)
    assert maintenance.prune_if_due(runtime)["jobs"] >= 1
    assert not exists(runtime, Job, again.id)


def test_moderation_policies_no_job_named_lately_go(runtime: Runtime) -> None:
    kept_for = timedelta(seconds=runtime.settings.job_retention_s + retention.POLICY_MARGIN_S)
    old = ScorePolicy(
        sha256=secrets.token_hex(32), questions={"a": "q?"}, used_at=utcnow() - kept_for - DAY
    )
    recent = ScorePolicy(
        sha256=secrets.token_hex(32), questions={"a": "q?"}, used_at=utcnow() - kept_for + DAY
    )
    add(runtime, old, recent)
    retention.prune(runtime)
    assert not exists(runtime, ScorePolicy, old.sha256)
    assert exists(runtime, ScorePolicy, recent.sha256)
