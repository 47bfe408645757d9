"""The Alembic migrations create exactly the schema the ORM models describe."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from services.core import tables  # noqa: F401
from services.core.db import Base, create_db_engine


def test_migrations_match_the_models(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
            assert diff == []
            tables = set(sa.inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert {"tenants", "api_keys", "images", "jobs", "alembic_version"} <= tables


def test_keys_are_stored_only_as_hashes(database_url: str, api_key: str) -> None:
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT key_hash, prefix FROM api_keys")).all()
    finally:
        engine.dispose()
    assert rows
    assert all(api_key != row.key_hash and api_key not in row.key_hash for row in rows)
    assert all(len(row.key_hash) == 64 for row in rows)
