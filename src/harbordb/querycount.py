"""Count the statements an engine sends, and spot relationship loads per parent row.

    async with Database(url) as db:
        with count_queries(db) as queries:
            await load_catalog(db)
        assert queries.count == 3

`assert_max_queries(db, 3)` fails with the list of statements when more were
sent. The counter sees every statement sent through the engine while it is
open, from any task: count single-task code, or expect the sum.

A relationship load "from an already-loaded parent" is one SQLAlchemy runs
for a single parent object after the parent query returned: lazy loads,
`immediateload`, and `await obj.awaitable_attrs.rel`. Load plans
(`selectinload`, `joinedload`) do not produce them. Each is recorded with the
attribute and the first frame of calling code outside SQLAlchemy and harbordb.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

import greenlet
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import ORMExecuteState, RelationshipProperty, Session

# Frames from these packages are never "the caller" of a relationship load.
_IGNORED_DIRS = tuple(
    os.path.dirname(path) + os.sep
    for path in (sqlalchemy.__file__, asyncio.__file__, greenlet.__file__, __file__)
    if path is not None
)


class _HasEngine(Protocol):
    engine: AsyncEngine


@dataclass(frozen=True)
class RelationshipLoad:
    """One relationship loaded for one parent object."""

    attribute: str  # "Customer.orders"
    location: str  # "app/views.py:42", or "<unknown>"


@dataclass
class QueryCounter:
    """What an engine did while the counter was open."""

    statements: list[str] = field(default_factory=list)
    relationship_loads: list[RelationshipLoad] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.statements)

    def loads_by_attribute(self) -> Counter[str]:
        return Counter(load.attribute for load in self.relationship_loads)

    def report(self) -> str:
        lines = [f"{self.count} statement(s):"]
        lines += [f"  {i}. {' '.join(sql.split())}" for i, sql in enumerate(self.statements, 1)]
        if self.relationship_loads:
            lines.append(f"{len(self.relationship_loads)} per-parent relationship load(s):")
            lines += [f"  {load.attribute} at {load.location}" for load in self.relationship_loads]
        return "\n".join(lines)


def _sync_engine(target: AsyncEngine | Engine | _HasEngine) -> Engine:
    if isinstance(target, Engine):
        return target
    if isinstance(target, AsyncEngine):
        return target.sync_engine
    return target.engine.sync_engine


def caller_location() -> str:
    """File and line of the innermost frame outside SQLAlchemy, asyncio and harbordb.

    ORM loads run inside a greenlet that SQLAlchemy spawned; its own stack ends
    at the spawn, so the walk continues in the parent greenlet, which is
    suspended inside the awaiting coroutines.
    """
    frame: FrameType | None = sys._getframe(1)
    current = greenlet.getcurrent()
    while frame is not None or current.parent is not None:
        if frame is None:
            current = current.parent
            frame = current.gr_frame
            continue
        filename = frame.f_code.co_filename
        if not filename.startswith(_IGNORED_DIRS):
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def relationship_attribute(state: ORMExecuteState) -> str | None:
    """`Class.attribute` when this execution loads a relationship for one parent."""
    if not state.is_relationship_load or state.lazy_loaded_from is None:
        return None
    path = state.loader_strategy_path
    prop = path[-1] if path is not None and len(path) else None
    if isinstance(prop, RelationshipProperty):
        return f"{prop.parent.class_.__name__}.{prop.key}"
    return f"{state.lazy_loaded_from.class_.__name__}.<relationship>"


# Counters open per engine, for statements sent on the driver's connection, past
# SQLAlchemy's cursor events (`harbordb.projection` reads): `report_statement`.
_DIRECT: dict[Engine, list[Callable[[str], None]]] = {}


def report_statement(engine: Engine, statement: str) -> None:
    """Record `statement` in the counters open on `engine`: for code that sends SQL on
    the driver's own connection, which SQLAlchemy's events never see."""
    for record in _DIRECT.get(engine, ()):
        record(statement)


class DirectObserver(Protocol):
    """Told of statements sent on the driver's own connection (`harbordb.observability`)."""

    def direct_started(
        self, connection: Connection, statement: str
    ) -> Callable[[int | None, BaseException | None], None]:
        """Called as the statement is sent; returns what to call with (rows, error) after."""
        ...


_DIRECT_OBSERVERS: dict[Engine, list[DirectObserver]] = {}


def has_direct_observers(engine: Engine) -> bool:
    """Whether observers watch statements sent on `engine`'s driver connections."""
    return bool(_DIRECT_OBSERVERS.get(engine))


def observe_direct(engine: Engine, observer: DirectObserver, *, remove: bool = False) -> None:
    """Register (or remove) `observer` for `engine`'s direct statements."""
    observers = _DIRECT_OBSERVERS.setdefault(engine, [])
    if remove:
        if observer in observers:
            observers.remove(observer)
        if not observers:
            del _DIRECT_OBSERVERS[engine]
    else:
        observers.append(observer)


@contextmanager
def direct_statement(connection: Connection, statement: str) -> Iterator[Callable[[int], None]]:
    """Around a statement sent on `connection`'s driver connection, past SQLAlchemy's events:
    reports it to the counters (`report_statement`) and to the observers; the body calls
    the yielded function with the number of rows."""
    engine = connection.engine
    report_statement(engine, statement)
    observers = _DIRECT_OBSERVERS.get(engine)
    if not observers:
        yield lambda rows: None
        return
    finished = [observer.direct_started(connection, statement) for observer in observers]
    rows: list[int] = []
    try:
        yield rows.append
    except BaseException as exc:
        for finish in finished:
            finish(rows[-1] if rows else None, exc)
        raise
    for finish in finished:
        finish(rows[-1] if rows else None, None)


@contextmanager
def count_queries(target: AsyncEngine | Engine | _HasEngine) -> Iterator[QueryCounter]:
    """Record statements sent through `target` (an engine or a `Database`)."""
    engine = _sync_engine(target)
    counter = QueryCounter()

    def on_cursor(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        counter.statements.append(statement)

    def on_orm_execute(state: ORMExecuteState) -> None:
        bind = state.session.get_bind()
        if getattr(bind, "engine", bind) is not engine:
            return
        attribute = relationship_attribute(state)
        if attribute is not None:
            counter.relationship_loads.append(RelationshipLoad(attribute, caller_location()))

    event.listen(engine, "before_cursor_execute", on_cursor)
    event.listen(Session, "do_orm_execute", on_orm_execute)
    direct = _DIRECT.setdefault(engine, [])
    direct.append(counter.statements.append)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", on_cursor)
        event.remove(Session, "do_orm_execute", on_orm_execute)
        direct.remove(counter.statements.append)
        if not direct:
            del _DIRECT[engine]


@contextmanager
def assert_max_queries(
    target: AsyncEngine | Engine | _HasEngine, limit: int
) -> Iterator[QueryCounter]:
    """Fail with the statement list if more than `limit` statements are sent."""
    with count_queries(target) as counter:
        yield counter
    if counter.count > limit:
        raise AssertionError(f"expected at most {limit} statement(s), got {counter.report()}")
