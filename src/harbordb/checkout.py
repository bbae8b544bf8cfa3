"""A unit of work's own connection, and what its end may skip.

A unit of work built by `Database` checks its connection out of the engine's
pool itself when the block starts (so an unreachable server fails at
``async with``), and opens its ORM session on that connection only when the
block first takes it (`harbordb.uow`), with READ ONLY and the isolation level
set then, as execution options. Checkout and checkin each run in a greenlet
kept for reuse (`harbordb.greenlets`). A block that never takes its session
costs no `Session`, no `SessionTransaction` and no characteristics to reset;
one whose connection has no transaction open ends without a cancel shield,
since there is no ROLLBACK to protect.

Public SQLAlchemy API (`Engine.connect`, `Connection.execution_options` and
`close`, `AsyncConnection(engine, connection)`, `QueuePool.overflow`), and
the asyncpg adapter's ``_transaction`` (`sends_nothing_back`; listed in
`harbordb.driver.ADAPTER_MEMBERS` and checked by the tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool


def set_options(connection: Connection, options: Mapping[str, Any]) -> None:
    """Set READ ONLY and the isolation level on a connection just checked out, when
    its session opens: no I/O, so no greenlet (nothing is begun yet, so the
    adapter's rollback before a new isolation level sends nothing), and a block
    that never opens its session skips them and their reset at checkin. The
    asyncpg adapter sends BEGIN, with these flags, with the first statement."""
    connection.execution_options(**options)


def close(session: Session | None, connection: Connection) -> None:
    """Close the session (rolling back its transaction), then return the connection
    (run in a greenlet: both may send ROLLBACK)."""
    try:
        if session is not None:
            session.close()
    finally:
        connection.close()


def sends_nothing_back(connection: Connection) -> bool:
    """Whether closing `connection` sends nothing to the server: no transaction open on
    it (the asyncpg adapter's ``_transaction``, `harbordb.driver.ADAPTER_MEMBERS`), and
    the pool keeps it (a pool at or below its `pool_size` never closes a connection on
    checkin; `NullPool` always does)."""
    if connection.invalidated:
        return False
    pool = connection.engine.pool
    if not isinstance(pool, QueuePool) or pool.overflow() > 0:
        return False
    return getattr(connection.connection.dbapi_connection, "_transaction", True) is None


def untouched(session: Session) -> bool:
    """Whether `session` never began a transaction and holds no object: closing it
    would do nothing but empty maps that are empty already."""
    # Pending objects are in `new`, persistent ones in the identity map (deleted ones
    # too, until a flush); counted, not iterated: a read that needed no transaction
    # (`harbordb.repository.direct`) may have left hundreds there.
    return session.get_transaction() is None and not session.new and len(session.identity_map) == 0
