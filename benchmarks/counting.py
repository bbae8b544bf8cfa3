"""Statements per operation, whichever client sent them.

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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from harbor_commerce.uow import CommerceWork
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
    database: Database[CommerceWork], raw: Any | None = None, *, tortoise: bool = False
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
