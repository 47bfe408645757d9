"""The long-lived connections of one process, and the unit of work that owns a transaction.

A `Runtime` is built once per process at the edges (`create_app`, a worker's start, the
CLI) by `services.core.bootstrap.create_runtime`, which wires in what follows each event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.core import outbox
from services.core.broker import Broker, create_celery
from services.core.config import Settings
from services.core.db import create_db_engine, create_session_factory, session_scope
from services.core.notify import JobEnds

EventHandler = Callable[["Runtime", list[outbox.Recorded]], None]


def create_redis(settings: Settings) -> redis.Redis:
    """A Redis client for the cache, events and heartbeats (the embedded Redis by default)."""
    return redis.Redis.from_url(
        settings.broker_url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
    )


@dataclass
class Runtime:
    """The connections of one process: database sessions, Redis, the broker."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    broker: Broker
    # Called with the outbox events of each committed unit of work.
    on_events: EventHandler
    # Job ends heard by this process (started on first use).
    job_ends: JobEnds

    @classmethod
    def create(cls, settings: Settings, on_events: EventHandler) -> Runtime:
        """Open the connections described by `settings` (lazily: nothing is dialed yet)."""
        engine = create_db_engine(settings.sqlalchemy_url)
        client = create_redis(settings)
        return cls(
            settings=settings,
            engine=engine,
            sessions=create_session_factory(engine),
            redis=client,
            broker=Broker(create_celery(settings), settings, client),
            on_events=on_events,
            job_ends=JobEnds(client),
        )

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on error; the events its
        changes emitted are handed on once it has committed (and dropped if it did not)."""
        with session_scope(self.sessions) as session:
            yield session
            session.flush()  # durable events get their row ids
            events = outbox.take(session)
        # Reached only when the commit succeeded.
        if events:
            self.on_events(self, events)

    def close(self) -> None:
        """Release connections (tests create many runtimes)."""
        self.engine.dispose()
        self.redis.close()
