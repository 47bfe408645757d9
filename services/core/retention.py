"""Retention: the pruning pass that deletes what the retention settings no longer keep.

Every kind of data is deleted in short transactions of at most `prune_chunk` rows (the ids
are selected, then deleted by id), at most `MAX_CHUNKS` of them per kind and pass: a large
backlog is worked off over several passes and never holds a long lock. What a live job or
batch still needs is never deleted:

- jobs: terminal ones finished before `job_retention_s`, once their batch is gone and no
  outbox event names them; a batch's lines go with their batch;
- batches: terminal ones that ended before `job_retention_s`, once no outbox event names them;
- images: stored before `image_retention_s` and used by no queued or running job (see
  `prune_images` for a submission that reuses an image while it is being deleted);
- files: past their `expires_at`, except the input of an unfinished batch and the result
  files of a batch that is still being finalized; their chunks go first;
- webhook deliveries: ended before `webhook_retention_s`; their attempts go first;
- idempotency keys: past their `expires_at`;
- audit events: recorded before `job_retention_s`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from services.core.db import rows_changed, utcnow
from services.core.runtime import Runtime
from services.core.tables import (
    BATCH_TERMINAL_STATUSES,
    TERMINAL_STATUSES,
    UNFINISHED_STATUSES,
    AuditEvent,
    Batch,
    BatchStatus,
    DeliveryStatus,
    File,
    FileChunk,
    IdempotencyKey,
    Image,
    Job,
    OutboxEvent,
    ScorePolicy,
    WebhookAttempt,
    WebhookDelivery,
    image_hashes,
)

log = structlog.get_logger(__name__)
# At most this many delete transactions per kind and pass.
MAX_CHUNKS = 20
# PostgreSQL: how long image pruning waits for the submissions in flight to commit before it
# gives up until the next pass (image submissions that arrive meanwhile wait behind it).
IMAGE_LOCK_TIMEOUT_MS = 2000

JOB_TERMINAL = sorted(status.value for status in TERMINAL_STATUSES)
BATCH_TERMINAL = sorted(status.value for status in BATCH_TERMINAL_STATUSES)
BATCH_UNFINISHED = [status.value for status in BatchStatus if not status.is_terminal()]
DELIVERY_ENDED = [
    DeliveryStatus.DELIVERED.value,
    DeliveryStatus.FAILED.value,
    DeliveryStatus.GONE.value,
]

# Deletes up to `limit` rows in the session's transaction; returns how many it deleted.
Chunk = Callable[[Session, int], int]


def drain(runtime: Runtime, chunk: Chunk, max_chunks: int) -> int:
    """Run `chunk` in one short transaction after another until it finds nothing more to
    delete, at most `max_chunks` times; returns how many rows were deleted."""
    total = 0
    for _ in range(max_chunks):
        with runtime.sessions.begin() as session:
            deleted = chunk(session, runtime.settings.prune_chunk)
        total += deleted
        if not deleted:
            break
    return total


def before(seconds: int) -> datetime:
    """The cutoff of a retention: `seconds` ago."""
    return utcnow() - timedelta(seconds=seconds)


def named_by_outbox(field: str) -> sa.Select[tuple[str | None]]:
    """The ids (`job_id` or `batch_id`) that outbox events still to be carried out name: the
    consequences of those events read their rows."""
    named = OutboxEvent.data[field].as_string()
    return sa.select(named).where(named.is_not(None))


def prune_batches(runtime: Runtime, max_chunks: int = MAX_CHUNKS) -> int:
    """Delete terminal batches that ended before the job retention; their line jobs follow
    in `prune_jobs` (a line whose batch is gone is pruned like any job)."""
    if not runtime.settings.job_retention_s:
        return 0
    cutoff = before(runtime.settings.job_retention_s)
    ended_at = sa.func.coalesce(
        Batch.completed_at, Batch.failed_at, Batch.cancelled_at, Batch.expired_at, Batch.created_at
    )

    def chunk(session: Session, limit: int) -> int:
        ids = list(
            session.scalars(
                sa.select(Batch.id)
                .where(
                    Batch.status.in_(BATCH_TERMINAL),
                    ended_at < cutoff,
                    Batch.id.not_in(named_by_outbox("batch_id")),
                )
                .limit(limit)
            )
        )
        if not ids:
            return 0
        statement = sa.delete(Batch).where(Batch.id.in_(ids), Batch.status.in_(BATCH_TERMINAL))
        return rows_changed(session, statement)

    return drain(runtime, chunk, max_chunks)


def terminal_jobs_where(*conditions: sa.ColumnElement[bool]) -> Chunk:
    """A chunk that deletes terminal jobs meeting `conditions` that no outbox event names
    (the deletion checks the status again: a job is never deleted while it runs)."""

    def chunk(session: Session, limit: int) -> int:
        ids = list(
            session.scalars(
                sa.select(Job.id)
                .where(
                    Job.status.in_(JOB_TERMINAL),
                    *conditions,
                    Job.id.not_in(named_by_outbox("job_id")),
                )
                .limit(limit)
            )
        )
        if not ids:
            return 0
        return rows_changed(
            session, sa.delete(Job).where(Job.id.in_(ids), Job.status.in_(JOB_TERMINAL))
        )

    return chunk


def prune_jobs(runtime: Runtime, max_chunks: int = MAX_CHUNKS) -> int:
    """Delete terminal jobs finished before the job retention, except the lines of a batch
    that is still kept (unfinished, or not yet old) and jobs an outbox event names."""
    if not runtime.settings.job_retention_s:
        return 0
    cutoff = before(runtime.settings.job_retention_s)
    batch_kept = sa.exists().where(Batch.id == Job.batch_id)
    return drain(runtime, terminal_jobs_where(Job.completed_at < cutoff, ~batch_kept), max_chunks)


def prune_unstored_responses(runtime: Runtime, max_chunks: int = MAX_CHUNKS) -> int:
    """Delete finished responses made with `store: false` a short while after they ended
    (`unstored_response_retention_s`): they were for their caller only, who read them (a reader
    deletes one at once; this catches those whose caller left before the end)."""
    cutoff = before(runtime.settings.unstored_response_retention_s)
    chunk = terminal_jobs_where(
        Job.kind == "response",
        Job.batch_id.is_(None),  # a batch's lines go with their batch
        Job.response["store"].as_boolean().is_(False),
        Job.completed_at < cutoff,
    )
    return drain(runtime, chunk, max_chunks)


def prune_images(runtime: Runtime, max_chunks: int = MAX_CHUNKS) -> int:
    """Delete images stored before the image retention that no queued or running job uses.

    A submission may reuse a stored image at any moment: it inserts the image "unless it
    exists" and then its job, and commits. Were the image deleted between that insert and
    that commit, the new job would reach its worker without its image. So the images of
    the unfinished jobs are read first (a long read, without locks); then each chunk is
    deleted by `delete_unused_images`, which waits for the submissions in flight and looks
    again at the unfinished jobs that the first read did not see.
    """
    settings = runtime.settings
    if not settings.image_retention_s:
        return 0
    cutoff = before(settings.image_retention_s)
    in_use: InUse | None = None
    deleted = 0
    after = ""
    for _ in range(max_chunks):
        with runtime.sessions() as session:
            page = list(
                session.scalars(
                    sa.select(Image.sha256)
                    .where(Image.created_at < cutoff, Image.sha256 > after)
                    .order_by(Image.sha256)
                    .limit(settings.prune_chunk)
                )
            )
            if not page:
                break
            if in_use is None:  # read only when there is something to prune
                in_use = InUse.read(session)
        after = page[-1]
        if unused := [sha256 for sha256 in page if sha256 not in in_use.images]:
            deleted += delete_unused_images(runtime, unused, cutoff, in_use)
    return deleted


@dataclass
class InUse:
    """Unfinished jobs, and the images they use."""

    jobs: set[str]
    images: set[str]

    @classmethod
    def read(cls, session: Session, job_ids: list[str] | None = None) -> InUse:
        """Those of all unfinished jobs, or of the unfinished ones among `job_ids`."""
        query = sa.select(Job.id, Job.messages).where(unfinished())
        if job_ids is None:
            queries = [query]
        else:
            # A few hundred ids per query keep each IN list within every database's limits.
            groups = [job_ids[start : start + 500] for start in range(0, len(job_ids), 500)]
            queries = [query.where(Job.id.in_(group)) for group in groups]
        found = cls(set(), set())
        for each in queries:
            for job_id, messages in session.execute(each.execution_options(yield_per=1000)):
                found.jobs.add(job_id)
                found.images.update(image_hashes(messages))
        return found


def delete_unused_images(
    runtime: Runtime, candidates: list[str], cutoff: datetime, in_use: InUse
) -> int:
    """Delete those of the `candidates` that no unfinished job uses; `in_use` (read earlier)
    is brought up to date with the jobs submitted since.

    The transaction first waits for the submissions storing images to commit and holds new
    ones back (`hold_image_inserts`), so every job that may use a candidate is visible; a
    submission held back inserts its image afresh once this commits.
    """
    with runtime.sessions.begin() as session:
        hold_image_inserts(session)
        current = set(session.scalars(sa.select(Job.id).where(unfinished())))
        new = InUse.read(session, sorted(current - in_use.jobs))
        in_use.jobs |= new.jobs
        in_use.images |= new.images
        unused = [sha256 for sha256 in candidates if sha256 not in in_use.images]
        if not unused:
            return 0
        statement = sa.delete(Image).where(Image.sha256.in_(unused), Image.created_at < cutoff)
        return rows_changed(session, statement)


def unfinished() -> sa.ColumnElement[bool]:
    """A job that is queued or running: its images must stay."""
    return Job.status.in_(UNFINISHED_STATUSES)


def hold_image_inserts(session: Session) -> None:
    """Wait until the transactions that are storing images have committed, and hold new
    ones back until this transaction ends (readers go on)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text(f"SET LOCAL lock_timeout = '{IMAGE_LOCK_TIMEOUT_MS}ms'"))
        # Conflicts with every writer of the table (and with another pruner), not readers.
        session.execute(sa.text("LOCK TABLE images IN SHARE ROW EXCLUSIVE MODE"))
    else:
        # SQLite has one writer at a time: taking the write lock now waits for the one in
        # flight, and holds the next ones back.
        session.execute(sa.text("BEGIN IMMEDIATE"))


# A moderation policy outlives the job retention by this much: a batch's lines may still be
# queued when their policy was last named by a new job (a batch's window is at most a day).
POLICY_MARGIN_S = 2 * 24 * 3600


def prune_score_policies(runtime: Runtime, max_chunks: int = MAX_CHUNKS) -> int:
    """Delete the moderation policies no job has named since the job retention (and a
    margin): every job that named them has been pruned or ended. Each new job naming a
    policy marks it used in its own transaction, so a policy in use is never that old."""
    if not runtime.settings.job_retention_s:
        return 0
    cutoff = before(runtime.settings.job_retention_s + POLICY_MARGIN_S)

    def chunk(session: Session, limit: int) -> int:
        hashes = list(
            session.scalars(
                sa.select(ScorePolicy.sha256).where(ScorePolicy.used_at < cutoff).limit(limit)
            )
        )
        if not hashes:
            return 0
        return rows_changed(
            session,
            sa.delete(ScorePolicy).where(
                ScorePolicy.sha256.in_(hashes), ScorePolicy.used_at < cutoff
            ),
        )

    return drain(runtime, chunk, max_chunks)


def prune_file_chunks(runtime: Runtime, max_chunks: int = MAX_CHUNKS) -> int:
    """Delete the chunks of files that `prune_files` will delete (past their `expires_at`,
    needed by no unfinished batch)."""
    now = utcnow()

    def chunk(session: Session, limit: int) -> int:
        keys = session.execute(
            sa.select(FileChunk.file_id, FileChunk.seq)
            .join(File, File.id == FileChunk.file_id)
            .where(*file_expired(now))
            .limit(limit)
        ).all()
        if not keys:
            return 0
        statement = sa.delete(FileChunk).where(
            sa.tuple_(FileChunk.file_id, FileChunk.seq).in_([tuple(key) for key in keys])
        )
        return rows_changed(session, statement)

    return drain(runtime, chunk, max_chunks)


def prune_files(runtime: Runtime, max_chunks: int = MAX_CHUNKS) -> int:
    """Delete files past their `expires_at` whose chunks are gone (`prune_file_chunks`),
    except those an unfinished batch needs."""
    now = utcnow()
    has_chunks = sa.exists().where(FileChunk.file_id == File.id)

    def chunk(session: Session, limit: int) -> int:
        ids = list(
            session.scalars(sa.select(File.id).where(*file_expired(now), ~has_chunks).limit(limit))
        )
        if not ids:
            return 0
        # A file's chunks are deleted with it (`ON DELETE CASCADE`), should one be new.
        return rows_changed(session, sa.delete(File).where(File.id.in_(ids)))

    return drain(runtime, chunk, max_chunks)


def file_expired(now: datetime) -> list[sa.ColumnElement[bool]]:
    """A file past its `expires_at` that no unfinished batch needs: not the input of one,
    and not a result file of one being finalized (its files are written before the batch
    names them, so every result file of the tenant written since the batch's creation is
    kept)."""
    batch_input = sa.select(Batch.input_file_id).where(Batch.status.in_(BATCH_UNFINISHED))
    finalizing = sa.exists().where(
        Batch.status == BatchStatus.FINALIZING.value,
        Batch.tenant_id == File.tenant_id,
        Batch.created_at <= File.created_at,
    )
    return [
        File.expires_at <= now,
        File.id.not_in(batch_input),
        ~sa.and_(File.purpose == "batch_output", finalizing),
    ]


def prune_webhook_attempts(runtime: Runtime, max_chunks: int = MAX_CHUNKS) -> int:
    """Delete the attempts of the deliveries that `prune_webhook_deliveries` will delete
    (explicitly: SQLite enforces `ON DELETE CASCADE` only where foreign keys are on)."""
    if not runtime.settings.webhook_retention_s:
        return 0
    cutoff = before(runtime.settings.webhook_retention_s)

    def chunk(session: Session, limit: int) -> int:
        ids = list(
            session.scalars(
                sa.select(WebhookAttempt.id)
                .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
                .where(*delivery_ended(cutoff))
                .limit(limit)
            )
        )
        if not ids:
            return 0
        return rows_changed(session, sa.delete(WebhookAttempt).where(WebhookAttempt.id.in_(ids)))

    return drain(runtime, chunk, max_chunks)


def prune_webhook_deliveries(runtime: Runtime, max_chunks: int = MAX_CHUNKS) -> int:
    """Delete deliveries that ended (delivered, failed or gone) before the webhook retention
    and whose attempts are gone (`prune_webhook_attempts`)."""
    if not runtime.settings.webhook_retention_s:
        return 0
    cutoff = before(runtime.settings.webhook_retention_s)
    has_attempts = sa.exists().where(WebhookAttempt.delivery_id == WebhookDelivery.id)

    def chunk(session: Session, limit: int) -> int:
        ids = list(
            session.scalars(
                sa.select(WebhookDelivery.id)
                .where(*delivery_ended(cutoff), ~has_attempts)
                .limit(limit)
            )
        )
        if not ids:
            return 0
        statement = sa.delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids))
        return rows_changed(session, statement)

    return drain(runtime, chunk, max_chunks)


def delivery_ended(cutoff: datetime) -> list[sa.ColumnElement[bool]]:
    """A delivery that ended before `cutoff`."""
    return [WebhookDelivery.status.in_(DELIVERY_ENDED), WebhookDelivery.completed_at < cutoff]


def prune_idempotency_keys(runtime: Runtime, max_chunks: int = MAX_CHUNKS) -> int:
    """Delete idempotency keys past their `expires_at` (an expired key is free again)."""
    now = utcnow()

    def chunk(session: Session, limit: int) -> int:
        ids = list(
            session.scalars(
                sa.select(IdempotencyKey.id).where(IdempotencyKey.expires_at <= now).limit(limit)
            )
        )
        if not ids:
            return 0
        statement = sa.delete(IdempotencyKey).where(
            IdempotencyKey.id.in_(ids), IdempotencyKey.expires_at <= now
        )
        return rows_changed(session, statement)

    return drain(runtime, chunk, max_chunks)


def prune_audit_events(runtime: Runtime, max_chunks: int = MAX_CHUNKS) -> int:
    """Delete audit events recorded before `job_retention_s` (kept as long as jobs are)."""
    if not runtime.settings.job_retention_s:
        return 0
    cutoff = before(runtime.settings.job_retention_s)

    def chunk(session: Session, limit: int) -> int:
        seqs = list(
            session.scalars(
                sa.select(AuditEvent.seq).where(AuditEvent.created_at < cutoff).limit(limit)
            )
        )
        if not seqs:
            return 0
        return rows_changed(session, sa.delete(AuditEvent).where(AuditEvent.seq.in_(seqs)))

    return drain(runtime, chunk, max_chunks)


# In this order: a batch before its lines, chunks before their file, attempts before
# their delivery.
PRUNERS: dict[str, Callable[[Runtime, int], int]] = {
    "batches": prune_batches,
    "jobs": prune_jobs,
    "unstored_responses": prune_unstored_responses,
    "images": prune_images,
    "score_policies": prune_score_policies,
    "file_chunks": prune_file_chunks,
    "files": prune_files,
    "webhook_attempts": prune_webhook_attempts,
    "webhook_deliveries": prune_webhook_deliveries,
    "idempotency_keys": prune_idempotency_keys,
    "audit_events": prune_audit_events,
}


def prune(runtime: Runtime, max_chunks: int = MAX_CHUNKS) -> dict[str, int]:
    """One pruning pass over every kind of data; returns the rows deleted per kind.

    A kind that fails (say, the database is briefly down) is left for the next pass.
    """
    counts: dict[str, int] = {}
    for kind, pruner in PRUNERS.items():
        try:
            counts[kind] = pruner(runtime, max_chunks)
        except sa.exc.SQLAlchemyError:
            log.exception("prune_failed", kind=kind)
            counts[kind] = 0
        if counts[kind]:
            log.info("pruned", kind=kind, rows=counts[kind])
    return counts
