"""Statements and round trips of psycopg 3 connections, read from libpq's protocol trace.

psycopg talks to the server through libpq, which writes to the socket itself:
the asyncio transport `benchmarks.counting.count_round_trips` watches never
sees it, and psycopg has no query logger. libpq's trace (``PQtrace``, psycopg's
`PGconn.trace`) logs every protocol message the client sends and receives, so
the count comes from the wire here too, not from an assumption:

- a round trip is a frontend Sync, Flush or Query message (the client then
  waits for the server), as `count_round_trips` counts them for asyncpg;
  psycopg with ``prepare_threshold=None`` sends Parse/Bind/Describe/Execute/Sync
  in one, and BEGIN, COMMIT and ROLLBACK as simple Query messages;
- a statement is a Parse, or a Query that is not transaction control.

Neither holds in pipeline mode (several Syncs per write), which the bench never
uses. Tracing writes every message, rows included: it is on for the untimed
instrumented operation only.
"""

from __future__ import annotations

import os
import re
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

# "F<TAB>length<TAB>Message<TAB> fields": one frontend message (no timestamps).
# A query's text may hold newlines, so only lines shaped like this count.
_FRONTEND = re.compile(rb"^F\t\d+\t(\w+)(?:\t(.*))?$", re.MULTILINE)
_WAITING = frozenset((b"Sync", b"Flush", b"Query"))
_TRANSACTION_CONTROL = re.compile(
    rb'\s*"\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION|SAVEPOINT|RELEASE)\b', re.IGNORECASE
)


def count_trace(trace: bytes) -> tuple[int, int]:
    """Statements and round trips in one connection's trace."""
    statements = round_trips = 0
    for match in _FRONTEND.finditer(trace):
        message, fields = match.group(1), match.group(2) or b""
        if message in _WAITING:
            round_trips += 1
        if message == b"Parse" or (message == b"Query" and not _TRANSACTION_CONTROL.match(fields)):
            statements += 1
    return statements, round_trips


@dataclass
class WireCount:
    """What psycopg connections sent during a `WireTrace.counting` block.

    The traces are read on first use of `statements` or `round_trips`, not as the
    block ends: reading them then would count in the operation's peak memory.
    """

    traces: list[IO[bytes]] = field(default_factory=list)
    _totals: tuple[int, int] | None = None

    def _count(self) -> tuple[int, int]:
        if self._totals is None:
            statements = round_trips = 0
            for sink in self.traces:
                with sink:
                    sink.seek(0)
                    more, trips = count_trace(sink.read())
                statements, round_trips = statements + more, round_trips + trips
            self.traces.clear()
            self._totals = (statements, round_trips)
        return self._totals

    @property
    def statements(self) -> int:
        return self._count()[0]

    @property
    def round_trips(self) -> int:
        return self._count()[1]


class WireTrace:
    """The psycopg connections to trace: added as they open (`add`), forgotten as
    they are collected."""

    def __init__(self) -> None:
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._open: list[tuple[Any, int, IO[bytes]]] = []
        self._active = False

    def add(self, connection: Any) -> None:
        """Trace `connection` (a psycopg connection) too; at once if a block is open."""
        self._connections.add(connection)
        if self._active:
            self._start(connection)

    def _start(self, connection: Any) -> None:
        from psycopg import pq

        if connection.closed:
            return
        sink = tempfile.TemporaryFile()  # noqa: SIM115 (closed when the block ends)
        # libpq fdopen()s the descriptor and never closes that stream: give it a
        # copy of its own, closed below once libpq has flushed and let go of it.
        descriptor = os.dup(sink.fileno())
        connection.pgconn.trace(descriptor)
        connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        self._open.append((connection.pgconn, descriptor, sink))

    @contextmanager
    def counting(self) -> Iterator[WireCount]:
        """Count what every traced connection sends in the block."""
        count = WireCount()
        self._active = True
        try:
            for connection in list(self._connections):
                self._start(connection)
            yield count
        finally:
            self._active = False
            opened, self._open = self._open, []
            for pgconn, descriptor, sink in opened:
                pgconn.untrace()  # flushes libpq's stream; it never writes to it again
                os.close(descriptor)
                count.traces.append(sink)


@contextmanager
def nothing_to_count() -> Iterator[WireCount]:
    """A block with no psycopg connections: nothing counted."""
    yield WireCount()
