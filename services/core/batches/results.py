"""A batch's output and error files, in OpenAI's batch output shape, written a page of jobs
at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.orm import Session, load_only, sessionmaker

from services.core.files import store_file
from services.core.responses.batches import BatchResultLine
from services.core.tables import Batch, Job

PAGE = 500


def write_result_file(
    sessions: sessionmaker[Session],
    batch: Batch,
    statuses: list[str],
    filename: str,
    life_s: int | None,
) -> str | None:
    """A JSONL file of the batch's jobs in `statuses` that expires `life_s` after its
    creation (never if None), or None when there are no such jobs."""
    lines = (
        (json.dumps(BatchResultLine.of(batch, job).dump(), separators=(",", ":")) + "\n").encode()
        for job in batch_jobs(sessions, batch, statuses)
    )
    first = next(lines, None)
    if first is None:
        return None

    def pieces() -> Iterator[bytes]:
        yield first
        yield from lines

    return store_file(
        sessions, batch.tenant_id, "batch_output", filename, pieces(), expires_after_s=life_s
    ).id


def batch_jobs(sessions: sessionmaker[Session], batch: Batch, statuses: list[str]) -> Iterator[Job]:
    """The batch's jobs in `statuses` with the columns of their result lines, a page at a
    time (keyset pagination on the id)."""
    last = ""
    while True:
        with sessions() as session:
            page = list(
                session.scalars(
                    sa.select(Job)
                    # The rows are read detached: a line that read any other column would
                    # raise, not load it row by row.
                    .options(load_only(*BatchResultLine.columns(batch.endpoint)))
                    .where(Job.batch_id == batch.id, Job.status.in_(statuses), Job.id > last)
                    .order_by(Job.id)
                    .limit(PAGE)
                )
            )
            session.expunge_all()
        if not page:
            return
        yield from page
        last = page[-1].id
