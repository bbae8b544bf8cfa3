"""Run a compiled read on the unit of work's own asyncpg connection.

SQLAlchemy's execution layer costs more per statement than the driver does on
loopback (ARCHITECTURE.md, "where the read time goes"), so projection reads
go to the driver directly, on the connection the session already holds: the
same transaction, settings, role and row-level security as everything else
in the unit of work, and the same pooler safety. With asyncpg's statement
cache off (harbordb's setting), ``fetch`` prepares an unnamed statement per
call, so the row description is always current, even after a migration
changed a column under a live connection.

SQLAlchemy's asyncpg adapter begins its transaction lazily, with the first
statement it runs. A read sent past it must begin it the same way, or it
would run outside the unit of work's transaction (and its isolation level).
That uses three non-public members of the adapter (``_execute_mutex``,
``_transaction``, ``_start_transaction``), present in SQLAlchemy 2.1 (pinned
``<2.2``); ``tests/integration/test_projection_driver.py`` fails loudly if
they change. Statements are reported to harbordb's statement counters
(`harbordb.querycount.report_statement`), which SQLAlchemy's events would miss.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from harbordb.errors import ConfigurationError, translating
from harbordb.querycount import report_statement

ADAPTER_MEMBERS = ("_execute_mutex", "_transaction", "_start_transaction")


def session_of(source: Any) -> AsyncSession:
    """The session of a unit of work (anything with ``.session``) or the session itself."""
    if isinstance(source, AsyncSession):
        return source
    session = getattr(source, "session", None)
    if not isinstance(session, AsyncSession):
        raise ConfigurationError(
            f"projections read through a unit of work or an AsyncSession, not {source!r}"
        )
    return session


async def fetch(source: Any, sql: str, args: list[Any]) -> list[Any]:
    """The rows of `sql` with positional `args`, in the session's transaction."""
    session = session_of(source)
    with translating():
        connection = await session.connection()
        pooled = await connection.get_raw_connection()
        adapter: Any = pooled.dbapi_connection
        report_statement(connection.sync_engine, sql)
        async with adapter._execute_mutex:
            if adapter._transaction is None:
                await adapter._start_transaction()
            rows: list[Any] = await pooled.driver_connection.fetch(sql, *args)  # type: ignore[union-attr]
    return rows


def dialect_of(source: Any) -> Any:
    """The SQLAlchemy dialect the session's engine compiles for."""
    session = session_of(source)
    bind = session.bind
    if bind is None:
        raise ConfigurationError("the session has no bind: projections need its engine")
    if bind.dialect.driver != "asyncpg":
        raise ConfigurationError("projections run on asyncpg (postgresql+asyncpg://)")
    return bind.dialect
