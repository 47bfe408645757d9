"""The long-lived connections of one process: database, Redis and the Celery app."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.core.config import Settings
from services.core.db import create_db_engine, create_session_factory
from services.core.queue import create_celery
from services.core.redis_client import create_redis


@dataclass
class Runtime:
    """Everything a request or a task needs besides its arguments."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    celery: Celery

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        """Open the connections described by `settings` (lazily: nothing is dialed yet)."""
        engine = create_db_engine(settings.sqlalchemy_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=create_session_factory(engine),
            redis=create_redis(settings),
            celery=create_celery(settings),
        )

    def close(self) -> None:
        """Release connections (tests create many runtimes)."""
        self.engine.dispose()
        self.redis.close()
