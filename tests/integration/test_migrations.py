"""The Alembic migrations create exactly the schema the ORM models describe."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from services.core import tables  # noqa: F401
from services.core.db import Base, create_db_engine
from services.core.migrate import alembic_config, upgrade
from services.core.secret_box import box_for_key
from services.core.webhooks.signing import new_secret


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


def test_upgrading_seals_the_webhook_secrets_stored_in_the_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0012")
    plain = new_secret()
    engine = create_db_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO tenants (id, name, created_at, webhook_secret, weight) "
                    "VALUES ('ten_old', 'old', '2026-01-01 00:00:00', :secret, 1)"
                ),
                {"secret": plain},
            )
        monkeypatch.setenv("VLMQ_SECRET_KEY", "an operator's key")
        upgrade(url)
        with engine.connect() as connection:
            stored = connection.execute(sa.text("SELECT webhook_secret FROM tenants")).scalar_one()
        assert stored.startswith("enc:v1:") and plain not in stored
        assert box_for_key("an operator's key").open(stored) == plain
        # Going down opens them again, for the code of that version.
        command.downgrade(alembic_config(url), "0012")
        with engine.connect() as connection:
            assert (
                connection.execute(sa.text("SELECT webhook_secret FROM tenants")).scalar_one()
                == plain
            )
    finally:
        engine.dispose()
