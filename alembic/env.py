"""Alembic environment for harbordb: async, over asyncpg.

The URL comes from the environment (`harbordb.config.migration_url`):
HARBORDB_MIGRATION_URL wins, because DDL should reach PostgreSQL directly
rather than through a transaction pooler. A caller that already holds a
connection (the test suite, `harbordb migrate` in-process) passes it as
``config.attributes["connection"]`` and migrations run on it.
"""

from __future__ import annotations

import asyncio
import logging.config

from alembic import context
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import create_async_engine

from harbor_commerce.models import Base
from harbordb.config import migration_url
from harbordb.db import normalize_url
from harbordb.errors import ConfigurationError

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or migration_url()
    if not url:
        raise ConfigurationError(
            "no database URL for migrations: set HARBORDB_MIGRATION_URL "
            "(or HARBORDB_DATABASE_URL / DATABASE_URL)"
        )
    return url


def _configure(connection: Connection | None = None, **kwargs: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=False,
        transaction_per_migration=False,
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`)."""
    _configure(
        url=normalize_url(_url()).render_as_string(hide_password=False),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(
        normalize_url(_url()),
        poolclass=pool.NullPool,
        connect_args={"statement_cache_size": 0},
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
