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
statement it runs. A read sent past it begins it the same way, with the unit
of work's isolation level, read-only and deferrable flags, except in one
case: at READ COMMITTED, with nothing begun yet (no settings, no statement
so far), the read runs on its own, without BEGIN. At that level PostgreSQL
takes a new snapshot for every statement, so a lone statement sees exactly
what it would see as the transaction's first one; the unit of work then has
nothing to roll back, and the read costs its own two round trips instead of
four. (The server's default level is the one SQLAlchemy read at the first
connect, ``dialect.default_isolation_level``.)

That uses non-public members of the adapter (``_execute_mutex``,
``_transaction``, ``_start_transaction``, ``isolation_level``, ``readonly``,
``deferrable``: `ADAPTER_MEMBERS`), present in
SQLAlchemy 2.1 (pinned ``<2.2``); ``tests/integration/test_projection.py``
fails loudly if they change. Statements are reported to harbordb's statement
counters and observers (`harbordb.querycount.direct_statement`), which
SQLAlchemy's events would miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from harbordb.errors import ConfigurationError, translating
from harbordb.querycount import direct_statement

ADAPTER_MEMBERS = (
    "_execute_mutex",
    "_transaction",
    "_start_transaction",
    "isolation_level",
    "readonly",
    "deferrable",
)


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


@dataclass(frozen=True)
class _Held:
    """The connection a session's current transaction holds, as found last time."""

    transaction: Any  # the session's root transaction then
    connection: Connection  # its (sync) connection
    driver: Any  # the asyncpg connection
    adapter: Any  # SQLAlchemy's adapter around it


_HELD = "harbordb.projection.connection"


async def _held(session: AsyncSession) -> _Held:
    """The session's connection, asking SQLAlchemy (a greenlet switch, about 50 us)
    only when the session's transaction changed since the last read: a root
    transaction keeps one connection until it ends, which closes it."""
    held: _Held | None = session.info.get(_HELD)
    transaction = session.sync_session.get_transaction()
    if (
        held is not None
        and transaction is not None
        and held.transaction is transaction
        and not held.connection.closed
        and not held.connection.invalidated
    ):
        return held
    held = await session.run_sync(_connection_of)
    session.info[_HELD] = held
    return held


def _connection_of(session: Session) -> _Held:
    """In one greenlet switch: the session's connection and the driver's beneath it."""
    connection = session.connection()
    pooled = connection.connection  # checked out for the transaction: no I/O here
    return _Held(
        session.get_transaction(), connection, pooled.driver_connection, pooled.dbapi_connection
    )


async def fetch(source: Any, sql: str, args: list[Any]) -> list[Any]:
    """The rows of `sql` with positional `args`, in the session's transaction."""
    session = session_of(source)
    with translating():
        held = await _held(session)
        adapter = held.adapter
        with direct_statement(held.connection, sql) as fetched:
            async with adapter._execute_mutex:
                if adapter._transaction is None and _needs_begin(adapter, held.connection.dialect):
                    await adapter._start_transaction()
                rows: list[Any] = await held.driver.fetch(sql, *args)
            fetched(len(rows))
    return rows


def _needs_begin(adapter: Any, dialect: Any) -> bool:
    """Whether a lone statement would see other than the transaction's first would."""
    level = adapter.isolation_level
    if level is None:  # the server's default
        level = str(dialect.default_isolation_level or "").lower().replace(" ", "_")
    return level != "read_committed" or bool(adapter.readonly or adapter.deferrable)


def dialect_of(source: Any) -> Any:
    """The SQLAlchemy dialect the session's engine compiles for."""
    session = session_of(source)
    bind = session.bind
    if bind is None:
        raise ConfigurationError("the session has no bind: projections need its engine")
    if bind.dialect.driver != "asyncpg":
        raise ConfigurationError("projections run on asyncpg (postgresql+asyncpg://)")
    return bind.dialect
