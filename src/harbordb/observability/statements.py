"""Spans per unit of work and per statement, and the slow-statement log.

Everything hangs off SQLAlchemy events of one engine: a session's root
transaction begins (`after_begin`) and ends (`after_transaction_end`), and
each statement passes `before_cursor_execute` / `after_cursor_execute` (or
`handle_error`). A unit of work is found from its session
(``session.info[UNIT_OF_WORK_KEY]``, set by `UnitOfWork`), and its retry
attempt from `harbordb.retry.ATTEMPT`.

Spans never carry claims or bound values: statement text comes with
placeholders (``$1``) and with quoted literals replaced by ``'?'``; a failed
statement's span records the SQLSTATE and the exception class, not the
server's message (whose DETAIL may quote values).
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, SessionTransaction

from harbordb.querycount import caller_location, observe_direct
from harbordb.retry import ATTEMPT

UNIT_OF_WORK_KEY = "harbordb.unit_of_work"
logger = logging.getLogger("harbordb.slow")

_LITERAL = re.compile(r"'(?:[^']|'')*'")
_START = "_harbordb_started"
_SPAN = "_harbordb_span"


def _driver_error(error: BaseException) -> BaseException:
    """The innermost exception of the chain that carries a SQLSTATE, else `error`."""
    found: BaseException = error
    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(getattr(current, "sqlstate", None), str):
            found = current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return found


def redact(statement: str) -> str:
    """The statement with every quoted string literal replaced by ``'?'``, on one line."""
    return " ".join(_LITERAL.sub("'?'", statement).split())


@dataclass
class _Work:
    """What is known about one open unit of work (a session's root transaction)."""

    role: str | None
    span: trace.Span | None
    statements: int = 0
    rows: int = 0
    failed: bool = False
    committed: bool = False
    connections: list[Connection] = field(default_factory=list)


def _describe(session: Session) -> tuple[bool, str | None, str | None]:
    """(read_only, role, isolation level) of the session's unit of work, if it has one."""
    uow = session.info.get(UNIT_OF_WORK_KEY)
    if uow is None:
        return False, None, None
    settings: dict[str, str] = getattr(uow, "_settings", {})
    return (
        settings.get("transaction_read_only") == "on",
        getattr(uow, "_role", None),
        getattr(uow, "_isolation_level", None),
    )


class StatementObserver:
    """Listens on one engine; `remove` stops it. Tracing and the slow log are each optional."""

    def __init__(
        self, engine: Engine, *, tracer: Tracer | None, slow_statement_ms: float | None
    ) -> None:
        self.engine = engine
        self.tracer = tracer
        self.slow_after = None if slow_statement_ms is None else slow_statement_ms / 1000.0
        self._sessions: weakref.WeakKeyDictionary[Session, _Work] = weakref.WeakKeyDictionary()
        self._connections: weakref.WeakKeyDictionary[Connection, _Work] = (
            weakref.WeakKeyDictionary()
        )
        self._listeners: list[tuple[Any, str, Any]] = [
            (Session, "after_begin", self._after_begin),
            (Session, "after_commit", self._after_commit),
            (Session, "after_transaction_end", self._after_transaction_end),
            (engine, "before_cursor_execute", self._before_execute),
            (engine, "after_cursor_execute", self._after_execute),
            (engine, "handle_error", self._on_error),
        ]
        for target, name, fn in self._listeners:
            event.listen(target, name, fn)
        observe_direct(engine, self)

    def remove(self) -> None:
        for target, name, fn in self._listeners:
            if event.contains(target, name, fn):
                event.remove(target, name, fn)
        observe_direct(self.engine, self, remove=True)

    # -- units of work --------------------------------------------------------------

    def _after_begin(
        self, session: Session, transaction: SessionTransaction, connection: Connection
    ) -> None:
        if connection.engine is not self.engine:
            return
        work = self._sessions.get(session)
        if work is None:
            read_only, role, isolation = _describe(session)
            span = None
            if self.tracer is not None:
                span = self.tracer.start_span(
                    "harbordb.unit_of_work",
                    kind=SpanKind.INTERNAL,
                    attributes={
                        "db.system.name": "postgresql",
                        "harbordb.read_only": read_only,
                        "harbordb.role": role or "",
                        "harbordb.isolation_level": isolation or "default",
                        "harbordb.retries": ATTEMPT.get(),
                    },
                )
            work = self._sessions[session] = _Work(role, span)
        work.connections.append(connection)
        self._connections[connection] = work

    def _after_commit(self, session: Session) -> None:
        work = self._sessions.get(session)
        if work is not None:
            work.committed = True

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is not None:
            return  # a savepoint or a subtransaction: the unit of work goes on
        work = self._sessions.pop(session, None)
        if work is None:
            return
        for connection in work.connections:
            self._connections.pop(connection, None)
        span = work.span
        if span is not None:
            span.set_attribute("harbordb.statements", work.statements)
            span.set_attribute("harbordb.rows", work.rows)
            span.set_attribute("harbordb.outcome", "committed" if work.committed else "rolled_back")
            if work.failed:
                span.set_status(Status(StatusCode.ERROR, "a statement failed"))
            span.end()

    # -- statements -------------------------------------------------------------------

    def _before_execute(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if context is None:
            return
        setattr(context, _SPAN, self._start_statement(conn, statement))
        setattr(context, _START, time.perf_counter())

    def _after_execute(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        rows = getattr(cursor, "rowcount", -1)
        self._finish_statement(
            conn,
            statement,
            getattr(context, _SPAN, None),
            getattr(context, _START, None),
            rows if isinstance(rows, int) and rows >= 0 else 0,
        )

    def direct_started(
        self, connection: Connection, statement: str
    ) -> Callable[[int | None, BaseException | None], None]:
        """A statement sent past SQLAlchemy (`harbordb.querycount.direct_statement`)."""
        span = self._start_statement(connection, statement)
        started = time.perf_counter()

        def finished(rows: int | None, error: BaseException | None) -> None:
            if error is None:
                self._finish_statement(connection, statement, span, started, rows or 0)
            else:
                self._fail_statement(connection, span, error)

        return finished

    def _start_statement(self, conn: Connection, statement: str) -> trace.Span | None:
        if self.tracer is None:
            return None
        work = self._connections.get(conn)
        parent = work.span if work is not None else None
        parent_context = trace.set_span_in_context(parent) if parent is not None else None
        operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        return self.tracer.start_span(
            operation or "statement",
            context=parent_context,
            kind=SpanKind.CLIENT,
            attributes={
                "db.system.name": "postgresql",
                "db.operation.name": operation,
                "db.query.text": redact(statement),
            },
        )

    def _finish_statement(
        self,
        conn: Connection,
        statement: str,
        span: trace.Span | None,
        started: float | None,
        rows: int,
    ) -> None:
        work = self._connections.get(conn)
        if work is not None:
            work.statements += 1
            work.rows += rows
        if span is not None:
            span.set_attribute("db.response.returned_rows", rows)
            span.end()
        if self.slow_after is not None and started is not None:
            elapsed = time.perf_counter() - started
            if elapsed >= self.slow_after:
                self._log_slow(statement, elapsed, work)

    def _fail_statement(
        self, conn: Connection | None, span: trace.Span | None, error: BaseException
    ) -> None:
        work = self._connections.get(conn) if conn is not None else None
        if work is not None:
            work.statements += 1
            work.failed = True
        if span is None:
            return
        original = _driver_error(error)
        sqlstate = getattr(original, "sqlstate", None)
        attributes = {"error.type": type(original).__name__}
        if isinstance(sqlstate, str):
            attributes["db.response.status_code"] = sqlstate
        span.set_attributes(attributes)
        span.set_status(Status(StatusCode.ERROR, f"SQLSTATE {sqlstate}" if sqlstate else None))
        span.end()

    def _on_error(self, exception_context: Any) -> None:
        context = exception_context.execution_context
        span = getattr(context, _SPAN, None) if context is not None else None
        self._fail_statement(
            exception_context.connection, span, exception_context.original_exception
        )
        if context is not None:
            setattr(context, _SPAN, None)

    def _log_slow(self, statement: str, elapsed: float, work: _Work | None) -> None:
        location = caller_location()
        role = (work.role if work is not None else None) or "-"
        text = redact(statement)
        logger.warning(
            "slow statement: %.1f ms at %s (role %s): %s",
            elapsed * 1000.0,
            location,
            role,
            text,
            extra={
                "harbordb_duration_ms": elapsed * 1000.0,
                "harbordb_location": location,
                "harbordb_role": role,
                "harbordb_statement": text,
            },
        )
