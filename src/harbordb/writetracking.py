"""Whether a unit of work's transaction has written anything.

A unit of work that wrote nothing ends without the ORM's rollback, which
would expire every object it loaded (`harbordb.uow`): those objects hold
committed data and stay readable. To know, listeners on each engine's dialect
look at every statement SQLAlchemy sends to the driver (through the session,
its flushes, ``session.connection()`` and ``run_sync`` alike) on a connection
whose tracking a unit of work started, and mark the connection as written on:

- INSERT, UPDATE, DELETE (ORM-enabled or Core) and DDL;
- a statement with a data-modifying CTE (``WITH x AS (UPDATE ...) SELECT ...``);
- textual SQL (``text()``, ``exec_driver_sql``): it may write, so it counts.

A SELECT, with or without ``FOR UPDATE``, is a read. Not seen: a SELECT of
a function that writes, and what goes to the driver's connection directly
(`Repository.copy` marks itself with `mark_written`).

The mark lives in the connection's ``info`` for as long as the unit of work
holds the connection; other users of the engine are not tracked.

The listeners are the dialect's (``do_execute``, ``do_executemany``,
``do_execute_no_params``), not the engine's ``before_cursor_execute``: any
engine-level listener makes every connection dispatch its events (connect,
begin, execute, rollback ...) through a joined dispatcher built per
connection, which measured about 13 us per unit of work and more per
statement here. The dialect's run once per statement, with nothing per
connection.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakSet

from sqlalchemy import event
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import CTE

_WROTE = "harbordb.wrote"
_TRACKED: WeakSet[Dialect] = WeakSet()


def track_writes(engine: Engine) -> None:
    """Install the listeners on `engine`'s dialect (once; open connections see them too)."""
    dialect = engine.dialect
    if dialect not in _TRACKED:
        event.listen(dialect, "do_execute", _on_execute)
        event.listen(dialect, "do_executemany", _on_execute)
        event.listen(dialect, "do_execute_no_params", _on_execute_no_params)
        _TRACKED.add(dialect)


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


def _on_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> None:
    _note(context)  # returns None: SQLAlchemy then executes the statement itself


def _on_execute_no_params(cursor: Any, statement: str, context: Any) -> None:
    _note(context)


def _note(context: Any) -> None:
    try:
        info = context.root_connection.info
    except Exception:  # no context, or a connection outside the pool (the first connect)
        return
    if info.get(_WROTE) is False and _writes(context):
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
