"""Statements and round trips per operation, whichever client sent them.

SQLAlchemy's statements come from `harbordb.querycount.count_queries`; raw
asyncpg's from its query logger; Tortoise's from its ``tortoise.db_client``
debug log. Transaction control (BEGIN, COMMIT, ...) is not a statement here:
SQLAlchemy's counter never sees it either, since asyncpg sends it outside the
cursor.
"""

from __future__ import annotations

import asyncio
import logging
import re
from asyncio import selector_events
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from harbordb import Database
from harbordb.querycount import count_queries

_TRANSACTION_CONTROL = re.compile(
    r"\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION|SAVEPOINT|RELEASE)\b", re.IGNORECASE
)


class _TortoiseQueries(logging.Handler):
    """Collects the SQL Tortoise logs at DEBUG before sending it."""

    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        if message.startswith(("Created connection pool", "Closed connection pool")):
            return
        args = record.args
        query = args[0] if message == "%s: %s" and isinstance(args, tuple) else record.getMessage()
        self.sink.append(str(query))


@asynccontextmanager
async def count_statements(
    database: Database[Any], raw: Any | None = None, *, tortoise: bool = False
) -> AsyncIterator[list[str]]:
    """Yield a list that holds, after the block, every statement sent meanwhile."""
    seen: list[str] = []
    logger = logging.getLogger("tortoise.db_client")
    handler = _TortoiseQueries(seen)
    level = logger.level
    if tortoise:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)

    def on_raw(record: Any) -> None:
        seen.append(record.query)

    if raw is not None:
        raw.add_query_logger(on_raw)
    try:
        with count_queries(database) as orm:
            yield seen
            # asyncpg calls its query loggers with call_soon: let them run.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        seen.extend(orm.statements)
    finally:
        if raw is not None:
            raw.remove_query_logger(on_raw)
        if tortoise:
            logger.removeHandler(handler)
            logger.setLevel(level)
    seen[:] = [sql for sql in seen if not _TRANSACTION_CONTROL.match(sql)]


# Frontend messages after which the client waits for the server: Sync ends an
# extended-protocol request, Flush asks for what is pending (asyncpg's prepare
# step), Query is a simple-protocol request (BEGIN, COMMIT, ...).
_WAITING_MESSAGES = frozenset(b"SHQ")


def _ends_a_request(data: bytes) -> bool:
    """Whether one client write holds a Sync, Flush or Query message (parsed by length,
    so a byte inside a message body never counts); unparsable data counts as one."""
    offset = 0
    while offset + 5 <= len(data):
        if data[offset] in _WAITING_MESSAGES:
            return True
        offset += 1 + int.from_bytes(data[offset + 1 : offset + 5], "big")
    return offset != len(data)


@contextmanager
def count_round_trips() -> Iterator[list[int]]:
    """Count the round trips every PostgreSQL connection of this process makes in the block.

    Counted from the wire protocol, not assumed: each client write that ends a
    request (Sync, Flush or a simple Query) is one round trip, since the client
    then waits for the server's reply. asyncpg with its statement cache off makes
    two per statement (Parse/Describe/Flush, then Parse/Bind/Execute/Sync).
    Patches asyncio's socket transport (TCP and Unix sockets alike) for the block;
    yields a one-element list holding the count.
    """
    counted = [0]
    transport: Any = getattr(selector_events, "_SelectorSocketTransport")  # noqa: B009
    original = transport.write

    def write(self: Any, data: Any) -> None:
        if _ends_a_request(bytes(data)):
            counted[0] += 1
        original(self, data)

    transport.write = write
    try:
        yield counted
    finally:
        transport.write = original
