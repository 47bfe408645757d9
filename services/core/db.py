"""The database: engine, sessions, transactions, the declarative base and UTC timestamps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

# A pooled connection idle this long is checked before use (see `ping_when_idle`).
IDLE_PING_AFTER_S = 5.0


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Base class of every ORM model."""

    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def create_db_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL mode and a busy timeout so API and workers share it."""
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # A database that is down must fail a request in seconds (it becomes a 503), not hang it.
    engine = sa.create_engine(
        url,
        pool_size=10,
        max_overflow=20,
        pool_timeout=5,
        connect_args={"connect_timeout": 3},
    )
    ping_when_idle(engine)
    return engine


def ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only when it sat idle for `IDLE_PING_AFTER_S`:
    one that was in use a moment ago is alive (a ping per checkout would add a round trip
    to every transaction), while one idle for long may have been cut by a database restart
    or a proxy. A dead one is replaced (the pool retries with a new connection); a
    connection that dies while in use is caught by SQLAlchemy's disconnect handling, which
    empties the pool."""

    @sa.event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_s = time.monotonic() - record.info.get("checked_in_at", time.monotonic())
        if idle_s < IDLE_PING_AFTER_S:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except Exception as exc:
            raise sa.exc.DisconnectionError("a pooled connection was dead") from exc


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (objects are serialised after it)."""
    return sessionmaker(engine, expire_on_commit=False)


def rows_changed(
    session: Session, statement: sa.Update | sa.Delete, params: dict[str, Any] | None = None
) -> int:
    """Execute an UPDATE or DELETE (with the values of its bound `params`) and return how
    many rows it changed."""
    result: sa.CursorResult[Any] = session.execute(statement, params)  # type: ignore[assignment]
    return int(result.rowcount)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
