"""Alembic environment: the URL comes from vlmq's Settings, the schema from its models."""

from alembic import context

from services.core import tables  # noqa: F401  (registers the tables on Base.metadata)
from services.core.config import Settings
from services.core.db import Base, create_db_engine

config = context.config
url = config.attributes.get("url") or Settings().sqlalchemy_url
target_metadata = Base.metadata

if context.is_offline_mode():
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    with create_db_engine(url).connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
