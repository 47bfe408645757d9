"""The events a state change emits, recorded in the transaction that makes the change.

A domain function that changes state calls `emit(session, event)`; the unit of work that
owns the transaction hands the events on once it commits (see `Runtime.unit_of_work`), and
drops them if it rolls back. This module imports nothing of vlmq, so every layer can emit
without knowing who listens: it is what keeps the job service, webhooks and batches free
of import cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

SESSION_KEY = "vlmq.outbox"


@dataclass(frozen=True)
class JobStarted:
    """A job's first attempt began running."""

    job_id: str


@dataclass(frozen=True)
class JobFinished:
    """A job reached a terminal state.

    An emitter that knows the job has no webhook or no batch says so, which saves the
    reads that would find out.
    """

    job_id: str
    has_webhook: bool = True
    in_batch: bool = True


@dataclass(frozen=True)
class BatchFinished:
    """A batch reached a terminal state with its result files written."""

    batch_id: str


Event = JobStarted | JobFinished | BatchFinished


def emit(session: Session, event: Event) -> None:
    """Record `event` in the session's transaction; it is handed on after the commit."""
    session.info.setdefault(SESSION_KEY, []).append(event)


def take(session: Session) -> list[Event]:
    """The events recorded in the session so far, removed from it."""
    events: list[Event] = session.info.pop(SESSION_KEY, [])
    return events
