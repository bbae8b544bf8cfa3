"""The async Alembic environment for any service: its ``env.py`` is a few lines.

    # alembic/env.py
    from harbordb.migrations import run_migrations
    from blogsvc.models import Base

    run_migrations(Base.metadata)

`run_migrations` reads Alembic's ``context`` and does what the mode asks:

- offline (``alembic upgrade head --sql``): prints the SQL, no database needed;
- online, given ``config.attributes["connection"]`` (a sync `Connection`, e.g.
  from ``AsyncConnection.run_sync``): runs on that connection and leaves its
  transaction to the caller;
- online otherwise: opens one asyncpg connection (NullPool, statement caches
  off) to the URL: the ini's ``sqlalchemy.url``, else ``HARBORDB_MIGRATION_URL``,
  else ``HARBORDB_DATABASE_URL`` / ``DATABASE_URL`` (`migration_url`). Keep
  DDL off a transaction pooler: point ``HARBORDB_MIGRATION_URL`` at PostgreSQL.

Alembic's commands are synchronous. Called from a thread whose event loop is
running (``command.upgrade`` inside async code), the async part runs on a
worker thread with its own loop, and the calling loop waits for it: prefer
``await asyncio.to_thread(command.upgrade, config, "head")`` in a live service.
"""

from __future__ import annotations

import asyncio
import logging.config
import threading
from collections.abc import Coroutine, Sequence
from typing import Any

from alembic import context
from sqlalchemy import Connection, MetaData
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from harbordb.config import migration_url
from harbordb.db import asyncpg_dsn, normalize_url
from harbordb.errors import ConfigurationError

__all__ = ["asyncpg_dsn", "migration_url", "run_migrations"]


def run_migrations(
    target_metadata: MetaData | Sequence[MetaData] | None,
    *,
    version_table: str = "alembic_version",
    **configure_options: Any,
) -> None:
    """Run the current Alembic command (upgrade, downgrade, check, ...) from ``env.py``.

    `target_metadata` is what autogenerate and ``check`` compare against;
    `configure_options` go to ``context.configure`` (``include_object``,
    ``version_table_schema``, ``transaction_per_migration``, ...). The ini's
    logging sections, if it has any, are applied unless the caller sets
    ``config.attributes["configure_logging"] = False`` (tests, a host app).
    """
    config = context.config
    if (
        config.config_file_name is not None
        and config.attributes.get("configure_logging", True)
        and config.file_config.has_section("loggers")
    ):
        logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)
    options: dict[str, Any] = {
        "target_metadata": target_metadata,
        "version_table": version_table,
        "compare_type": True,
        **configure_options,
    }
    if context.is_offline_mode():
        _run_offline(options)
        return
    connection = config.attributes.get("connection")
    if isinstance(connection, AsyncConnection):
        raise ConfigurationError(
            'config.attributes["connection"] must be a sync Connection: call the Alembic '
            "command inside AsyncConnection.run_sync(...) and pass the connection it gives"
        )
    if connection is not None:
        _run_on(connection, options)
        return
    _run_coroutine_blocking(_run_online(_url(), options))


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url") or migration_url()
    if not url:
        raise ConfigurationError(
            "no database URL for migrations: set HARBORDB_MIGRATION_URL (or "
            "HARBORDB_DATABASE_URL / DATABASE_URL), sqlalchemy.url in alembic.ini, "
            "or pass --database-url to harbordb migrate"
        )
    return url


def _run_offline(options: dict[str, Any]) -> None:
    url = context.config.get_main_option("sqlalchemy.url") or migration_url()
    # The SQL depends on the dialect only: without a URL, PostgreSQL's will do.
    target: dict[str, Any] = {"url": normalize_url(url)} if url else {"dialect_name": "postgresql"}
    context.configure(
        **target,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **options,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection, options: dict[str, Any]) -> None:
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str, options: dict[str, Any]) -> None:
    engine = create_async_engine(
        normalize_url(url),
        poolclass=NullPool,
        # Named prepared statements would break behind a transaction pooler.
        connect_args={"statement_cache_size": 0},
        hide_parameters=True,
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_on, options)
    finally:
        await engine.dispose()


def _run_coroutine_blocking(coroutine: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(coroutine)``, on a worker thread when this thread's loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    failure: list[BaseException] = []

    def work() -> None:
        try:
            asyncio.run(coroutine)
        except BaseException as exc:  # re-raised in the calling thread
            failure.append(exc)

    worker = threading.Thread(target=work, name="harbordb-migrations")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
