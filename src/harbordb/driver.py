"""Run a statement on the unit of work's own asyncpg connection, past SQLAlchemy.

SQLAlchemy's execution layer costs more per statement than the driver does on
loopback (ARCHITECTURE.md, "where the read time goes"), so projection reads,
the repository's plans where they qualify (`harbordb.repository.direct`) and
a unit of work's settings statement go to the driver directly, on the
connection the session already holds: the same transaction, settings, role
and row-level security as everything else in the unit of work, and the same
pooler safety. With asyncpg's statement
cache off (harbordb's setting), ``fetch`` prepares an unnamed statement per
call, so the row description is always current, even after a migration
changed a column under a live connection.

With ``named_statements=True`` asyncpg's statement cache is on, and ``fetch``
runs a named statement prepared once per connection, in one round trip. The
server refuses one whose result type a schema change altered; asyncpg then
drops that connection's cache, and this module marks the engine's caches
stale the way SQLAlchemy does for its own statements (the dialect's
``_invalidate_schema_cache``), so that every other connection of the engine
drops its asyncpg caches before its next read (the adapter's
``_check_type_cache_invalidation``) instead of failing once each. The error
surfaces as `Retryable`, which `Database.run` re-runs. Errors that stale
parameter types cause mark the caches stale too (`harbordb.statements`).

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

A unit of work that checked out its own connection and has not opened its
session (no settings, no READ ONLY, no isolation level, nothing read through
the session yet) is read on that connection directly: opening a session only
to find the connection cost about 170 us of client CPU per unit of work. Its
statements then run as those of a unit of work without a session: unless the
server's default level is not READ COMMITTED, nothing is begun, so there is
nothing for the session to join or roll back if the block opens it later.
With statement observers on the engine (`harbordb.observability`), reads
still open the session, whose transaction carries the unit of work's span.
The unit of work names that connection (``UnitOfWork._bare_connection``).

Finding the session's connection reads ``SessionTransaction._connections``
(`SESSION_TRANSACTION_MEMBER`). It also uses non-public members of the adapter (``_execute_mutex``,
``_transaction``, ``_start_transaction``, ``isolation_level``, ``readonly``,
``deferrable``, ``_invalidate_schema_cache_asof``, ``_check_type_cache_invalidation``:
`ADAPTER_MEMBERS`) and of the dialect (`DIALECT_MEMBERS`), present in
SQLAlchemy 2.1 (pinned ``<2.2``); ``tests/integration/test_projection.py``
fails loudly if they change. Statements are reported to harbordb's statement
counters and observers (`harbordb.querycount.direct_statement`), which
SQLAlchemy's events would miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asyncpg.exceptions import InternalServerError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn

from harbordb import greenlets, statements
from harbordb.errors import (
    OUTDATED_STATEMENT,
    ConfigurationError,
    HarborError,
    translate,
    translating,
)
from harbordb.querycount import direct_statement, has_direct_observers, report_statement

# SQLAlchemy's `SessionTransaction._connections` (bind -> (connection, ...)): read to
# find a unit of work's connection without a greenlet switch; checked by the tests.
SESSION_TRANSACTION_MEMBER = "_connections"

ADAPTER_MEMBERS = (
    "_execute_mutex",
    "_transaction",
    "_start_transaction",
    "isolation_level",
    "readonly",
    "deferrable",
    "_invalidate_schema_cache_asof",
    "_check_type_cache_invalidation",
)
# The asyncpg dialect's cross-connection invalidation of cached statements and types.
DIALECT_MEMBERS = ("_invalidate_schema_cache", "_invalidate_schema_cache_asof")


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
class Held:
    """The connection a session's current transaction holds, as found last time."""

    transaction: Any  # the session's root transaction then
    connection: Connection  # its (sync) connection
    driver: Any  # the asyncpg connection
    adapter: Any  # SQLAlchemy's adapter around it

    @property
    def dialect(self) -> Any:
        return self.connection.dialect


_HELD = "harbordb.driver.connection"


async def held(source: Any) -> Held:
    """The connection of a unit of work's (or a session's) transaction.

    Found without a greenlet switch when the session's root transaction already
    holds exactly one connection (once the unit of work's session has begun), else
    asked of SQLAlchemy in one switch (`harbordb.greenlets`); then remembered until
    the transaction ends (which closes that connection) or changes.
    """
    own = own_connection(source)
    if own is not None:
        return own
    session = session_of(source)
    found: Held | None = session.info.get(_HELD)
    transaction = session.sync_session.get_transaction()
    if transaction is not None:
        if found is not None and found.transaction is transaction and _usable(found.connection):
            return found
        entries = getattr(transaction, SESSION_TRANSACTION_MEMBER, None) or {}
        # Keyed by the bind and by the connection itself: one connection, twice.
        distinct = {id(entry[0]): entry[0] for entry in entries.values()}
        if len(distinct) == 1:
            (connection,) = distinct.values()
            if isinstance(connection, Connection) and _usable(connection):
                found = _held_on(transaction, connection)
    if found is None or found.transaction is not transaction:
        with translating():
            found = await greenlets.call(_connection_of, session.sync_session)
    if found.dialect.driver != "asyncpg":
        raise ConfigurationError("projections run on asyncpg (postgresql+asyncpg://)")
    session.info[_HELD] = found
    return found


def own_connection(source: Any) -> Held | None:
    """The connection an open unit of work checked out itself, when reading on it needs
    no session (``UnitOfWork._bare_connection``) and no statement observer is on the
    engine (the unit of work's span hangs off its session's transaction)."""
    bare = getattr(source, "_bare_connection", None)
    connection = None if bare is None else bare()
    if (
        not isinstance(connection, Connection)
        or not _usable(connection)
        or has_direct_observers(connection.engine)
    ):
        return None
    return _held_on(None, connection)


def _usable(connection: Connection) -> bool:
    return not connection.closed and not connection.invalidated


def _held_on(transaction: Any, connection: Connection) -> Held:
    pooled = connection.connection  # checked out for the transaction: no I/O here
    return Held(transaction, connection, pooled.driver_connection, pooled.dbapi_connection)


def _connection_of(session: Session) -> Held:
    """In one greenlet switch: the session's connection and the driver's beneath it,
    with the transaction that `Session.connection` begins if none was."""
    connection = session.connection()
    return _held_on(session.get_transaction(), connection)


async def connection_lost(session: AsyncSession) -> bool:
    """Whether the driver already knows the session's connection is gone (no round trip)."""
    try:
        connection = await session.connection()
        driver = connection.sync_connection.connection.driver_connection  # type: ignore[union-attr]
        return bool(driver is None or driver.is_closed())
    except Exception:
        return True


async def fetch(connection: Held, sql: str, args: list[Any], *, begin: bool = False) -> list[Any]:
    """The rows of `sql` with positional `args`, in the session's transaction.

    With ``begin=True`` the transaction is begun first even where a lone read would
    do without (`_needs_begin`): for statements whose effect lasts only as long as
    the transaction, as a unit of work's ``set_config(..., true)`` settings.
    """
    sync = connection.connection
    if has_direct_observers(sync.engine):
        with translating(), direct_statement(sync, sql) as fetched:
            rows = await _fetch_or_discard(connection, sql, args, begin)
            fetched(len(rows))
        return rows
    # No observers: the same counting and error translation, without two context managers.
    report_statement(sync.engine, sql)
    try:
        return await _fetch_or_discard(connection, sql, args, begin)
    except HarborError:
        raise
    except Exception as exc:
        error = translate(exc)
        if error is None:
            raise
    raise error  # outside the except block: the driver's error is its __cause__ only


async def _fetch_or_discard(
    connection: Held, sql: str, args: list[Any], begin: bool = False
) -> list[Any]:
    """`_fetch`; a connection found lost on the way is invalidated, as SQLAlchemy does
    with one it sees lost (the pool discards it), and raised as `DisconnectionError`
    (`Unavailable` once translated)."""
    try:
        return await _fetch(connection, sql, args, begin)
    except Exception as exc:
        if isinstance(exc, HarborError) or not connection.driver.is_closed():
            raise
        if not connection.connection.invalidated:
            await greenlet_spawn(connection.connection.invalidate, exc)
        raise DisconnectionError(f"connection lost ({type(exc).__name__})") from exc


async def _fetch(connection: Held, sql: str, args: list[Any], begin: bool = False) -> list[Any]:
    adapter = connection.adapter
    dialect = connection.dialect
    async with adapter._execute_mutex:
        stale_after = dialect._invalidate_schema_cache_asof
        if stale_after > adapter._invalidate_schema_cache_asof:
            await adapter._check_type_cache_invalidation(stale_after)  # drops asyncpg's caches
        if adapter._transaction is None and (begin or _needs_begin(adapter, dialect)):
            await adapter._start_transaction()
        try:
            rows: list[Any] = await connection.driver.fetch(sql, *args)
        except (*OUTDATED_STATEMENT, InternalServerError):
            # As SQLAlchemy does for its own statements (XX000: "cache lookup failed
            # for type"): every connection of the engine drops its caches.
            dialect._invalidate_schema_cache()
            raise
        except Exception as exc:
            if statements.named(connection.connection.engine):
                statements.after_error(dialect, exc)  # stale parameter types, maybe
            raise
    return rows


def _needs_begin(adapter: Any, dialect: Any) -> bool:
    """Whether a lone statement would see other than the transaction's first would."""
    level = adapter.isolation_level
    if level is None:  # the server's default
        level = str(dialect.default_isolation_level or "").lower().replace(" ", "_")
    return level != "read_committed" or bool(adapter.readonly or adapter.deferrable)
