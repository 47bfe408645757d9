"""Apply the Alembic migrations (used by `vlmq migrate`, `vlmq up` and the tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from services.core.config import REPO_ROOT


def alembic_config(url: str) -> Config:
    """An Alembic config for the repository's migrations against `url`."""
    config = Config()
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.attributes["url"] = url
    return config


def upgrade(url: str) -> None:
    """Bring the database at `url` to the newest schema."""
    command.upgrade(alembic_config(url), "head")
