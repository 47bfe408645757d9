"""The events a state change emits, written in the transaction that makes the change.

A domain function that changes state calls `emit(session, event)`. An event with lasting
consequences (a webhook to schedule, a batch to advance) is also stored as an
`outbox_events` row in the same transaction, so no crash can separate the change from its
consequences. Once the transaction commits, the unit of work hands the events to
`effects.dispatch` (see `Runtime.unit_of_work`), which deletes each row whose consequences
were carried out; the maintenance pass carries out the rows left behind by a process that
died first. Consequences are idempotent, so carrying one out twice is harmless.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from services.core.db import utcnow
from services.core.tables import OutboxEvent

log = structlog.get_logger(__name__)
SESSION_KEY = "vlmq.outbox"


@dataclass(frozen=True)
class JobStarted:
    """A job with a webhook began its first attempt."""

    job_id: str

    @property
    def durable(self) -> bool:
        """Its `start` webhook must not be lost."""
        return True


@dataclass(frozen=True)
class JobFinished:
    """A job reached a terminal state.

    An emitter that knows the job has no webhook or no batch says so: then only waiters
    are woken, which needs no row (a lost wake-up only delays them until they re-check).
    """

    job_id: str
    has_webhook: bool = True
    in_batch: bool = True
    # The job's final fields, announced to waiters with the wake-up; never stored.
    ending: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def durable(self) -> bool:
        """A webhook or a batch depends on it."""
        return self.has_webhook or self.in_batch


@dataclass(frozen=True)
class BatchFinished:
    """A batch reached a terminal state."""

    batch_id: str

    @property
    def durable(self) -> bool:
        """Its `completed` webhook must not be lost."""
        return True


@dataclass(frozen=True)
class BatchLinesFinished:
    """Some lines of a batch reached a terminal state together (one chunk of lines)."""

    batch_id: str

    @property
    def durable(self) -> bool:
        """The batch must hear of it, or it would never finalize."""
        return True


Event = JobStarted | JobFinished | BatchFinished | BatchLinesFinished
KINDS: dict[str, type[Event]] = {
    "job_started": JobStarted,
    "job_finished": JobFinished,
    "batch_finished": BatchFinished,
    "batch_lines_finished": BatchLinesFinished,
}


@dataclass(frozen=True)
class Recorded:
    """An event of a committed transaction, and its outbox row if it has one."""

    event: Event
    row_id: int | None = None


def kind_of(event: Event) -> str:
    """The stored name of the event's class."""
    return next(kind for kind, cls in KINDS.items() if isinstance(event, cls))


def emit(session: Session, event: Event) -> None:
    """Record `event` in the session's transaction (as a row too, if it is durable)."""
    row = None
    if event.durable:
        data = {name: value for name, value in asdict(event).items() if name != "ending"}
        row = OutboxEvent(kind=kind_of(event), data=data, created_at=utcnow())
        session.add(row)
    session.info.setdefault(SESSION_KEY, []).append((event, row))


def take(session: Session) -> list[Recorded]:
    """The events recorded in the session so far, removed from it; call after the commit
    (when the rows have their ids)."""
    pending: list[tuple[Event, OutboxEvent | None]] = session.info.pop(SESSION_KEY, [])
    return [Recorded(event, row.id if row is not None else None) for event, row in pending]


def delete_done(session: Session, row_ids: list[int]) -> None:
    """Delete the rows whose consequences have been carried out."""
    if row_ids:
        session.execute(sa.delete(OutboxEvent).where(OutboxEvent.id.in_(row_ids)))


def postpone(session: Session, row_ids: list[int]) -> None:
    """Move rows whose consequences failed to the back of the line (the next passes try the
    others first, so a row that keeps failing never holds up the rest)."""
    if row_ids:
        session.execute(
            sa.update(OutboxEvent).where(OutboxEvent.id.in_(row_ids)).values(created_at=utcnow())
        )


def left_behind(session: Session, older_than_s: float, limit: int) -> list[Recorded]:
    """Rows older than `older_than_s` (their process died before carrying them out, or a
    consequence failed), oldest first. A row that cannot be read back as an event (written
    by another version) is logged and deleted."""
    cutoff: datetime = utcnow() - timedelta(seconds=older_than_s)
    rows = session.scalars(
        sa.select(OutboxEvent)
        .where(OutboxEvent.created_at < cutoff)
        .order_by(OutboxEvent.created_at)
        .limit(limit)
    ).all()
    found: list[Recorded] = []
    unreadable: list[int] = []
    for row in rows:
        try:
            found.append(Recorded(KINDS[row.kind](**row.data), row.id))
        except (KeyError, TypeError):
            log.error("outbox_row_unreadable", id=row.id, kind=row.kind)
            unreadable.append(row.id)
    delete_done(session, unreadable)
    return found
