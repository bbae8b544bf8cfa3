"""Whether a unit of work's transaction has written anything.

A unit of work that wrote nothing ends without the ORM's rollback, which
would expire every object it loaded (`harbordb.uow`): those objects hold
committed data and stay readable. To know, one listener per engine looks at
every statement SQLAlchemy sends (through the session, its flushes,
``session.connection()`` and ``run_sync`` alike) on a connection whose
tracking a unit of work started, and marks the connection as written on:

- INSERT, UPDATE, DELETE (ORM-enabled or Core) and DDL;
- a statement with a data-modifying CTE (``WITH x AS (UPDATE ...) SELECT ...``);
- textual SQL (``text()``, ``exec_driver_sql``): it may write, so it counts.

A SELECT, with or without ``FOR UPDATE``, is a read. Not seen: a SELECT of
a function that writes, and what goes to the driver's connection directly
(`Repository.copy` marks itself with `mark_written`).

The mark lives in the connection's ``info`` for as long as the unit of work
holds the connection; other users of the engine are not tracked.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakSet

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import CTE

_WROTE = "harbordb.wrote"
_TRACKED: WeakSet[Engine] = WeakSet()


def track_writes(engine: Engine) -> None:
    """Install the listener on `engine` (once; connections already open see it too)."""
    if engine not in _TRACKED:
        event.listen(engine, "before_cursor_execute", _note_statement)
        _TRACKED.add(engine)


def start_tracking(info: dict[Any, Any]) -> None:
    """From now on, note writes on the connection whose ``info`` this is."""
    info[_WROTE] = False


def stop_tracking(info: dict[Any, Any]) -> None:
    info.pop(_WROTE, None)


def mark_written(info: dict[Any, Any]) -> None:
    """Note a write SQLAlchemy does not see (one sent on the driver's connection)."""
    if _WROTE in info:
        info[_WROTE] = True


def has_written(info: dict[Any, Any] | None) -> bool:
    """Whether the connection wrote since `start_tracking`; True when it was not tracked."""
    return info is None or info.get(_WROTE, True) is not False


def _note_statement(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    info = conn.info
    if info.get(_WROTE) is False and (context is None or _writes(context)):
        info[_WROTE] = True


def _writes(context: Any) -> bool:
    if context.isinsert or context.isupdate or context.isdelete or context.isddl:
        return True
    if context.is_text:
        return True
    ctes = getattr(context.compiled, "ctes", None)
    return any(_modifies(cte) for cte in ctes) if ctes else False


def _modifies(cte: CTE) -> bool:
    element: Any = cte
    while isinstance(element, CTE):
        element = element.element
    return isinstance(element, UpdateBase)
