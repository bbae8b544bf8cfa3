"""Load worker for test_pgbouncer.py: one OS process of concurrent transactions.

Run as ``python -m tests.integration.pgbouncer_load URL MODE TASKS TRANSACTIONS``
from the checkout's root; prints one JSON line ``{"ok": n, "errors": [...]}``.
MODE ``harbordb`` uses `harbordb.Database(pooler="external")`; MODE
``driver-defaults`` uses an engine with asyncpg's and SQLAlchemy's default
statement caches, which a transaction pooler is known to break.
"""

from __future__ import annotations

import asyncio
import json
import sys

from sqlalchemy import Enum, bindparam, column, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from tests.library.models import BookStatus

from harbordb import Database

STATUS = Enum(BookStatus, name="book_status", values_callable=lambda e: [m.value for m in e])


async def transaction(engine: AsyncEngine, task: int, n: int) -> None:
    async with engine.begin() as conn:
        # A plain statement with a bind parameter.
        value = await conn.scalar(select(bindparam("v", task * 1000 + n) + 1))
        assert value == task * 1000 + n + 1, value
        # An enum-typed result column (asyncpg introspects the enum's type).
        status = BookStatus.PUBLISHED if n % 2 else BookStatus.OUT_OF_PRINT
        got = await conn.scalar(select(func.cast(bindparam("s", status.value), STATUS)))
        assert got == status, got
        # A streamed (server-side cursor) result.
        stream = await conn.stream(
            select(column("g")).select_from(func.generate_series(1, 50).alias("g"))
        )
        total = sum([row[0] async for row in stream])
        assert total == 1275, total
        await conn.execute(text("SELECT pg_sleep(0)"))


async def main(url: str, mode: str, tasks: int, transactions: int) -> dict[str, object]:
    if mode == "harbordb":
        db = Database(url, pooler="external")
        engine = db.engine
    else:
        db = None
        driver_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
        engine = create_async_engine(driver_url, poolclass=NullPool)
    errors: list[str] = []
    ok = 0

    async def worker(task: int) -> None:
        nonlocal ok
        for n in range(transactions):
            try:
                await transaction(engine, task, n)
                ok += 1
            except Exception as exc:  # every failure is the result being measured
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")

    try:
        await asyncio.gather(*(worker(t) for t in range(tasks)))
    finally:
        await (db.dispose() if db else engine.dispose())
    return {"ok": ok, "errors": errors}


if __name__ == "__main__":
    url, mode, tasks, transactions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(main(url, mode, tasks, transactions))))
