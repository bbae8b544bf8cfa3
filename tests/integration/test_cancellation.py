"""Cancelling a task inside a unit of work rolls back and leaves the pool healthy.

Two ways to cancel: `Task.cancel()` (one CancelledError) and an anyio cancel
scope (which cancels every await until the scope exits), each while the
server runs a statement and while the unit of work waits between statements.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest
from sqlalchemy import func, select, text
from tests.library.models import Author

from harbordb import Database

HOW = ["task.cancel", "anyio cancel scope"]


@pytest.fixture
def db(one_connection_db: Database) -> Database:
    """`one_connection_db`: a broken connection would be handed out again."""
    return one_connection_db


async def _backend_state(observer: Database, pid: int) -> str | None:
    """``state:wait_event`` of a server backend, from a fresh snapshot; None once it is gone."""
    async with observer.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        result = await autocommit.execute(
            text("SELECT state, wait_event FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        )
        row = result.one_or_none()
    return None if row is None else f"{row.state}:{row.wait_event}"


async def _wait_for_state(observer: Database, pid: int, wanted: set[str | None]) -> str | None:
    """Poll until the backend reaches a wanted state; give up after a while, returning the last."""
    with anyio.move_on_after(20):
        while True:
            state = await _backend_state(observer, pid)
            if state in wanted:
                return state
            await asyncio.sleep(0.02)
    return await _backend_state(observer, pid)


async def _rows(db: Database, email: str) -> int:
    async with db.unit_of_work() as uow:
        result = await uow.session.execute(
            select(func.count()).select_from(Author).where(Author.email == email)
        )
        return result.scalar_one()


async def _backend_of_next_unit_of_work(db: Database) -> int:
    async with db.unit_of_work() as uow:
        pid: int = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        return pid


async def _cancel_while(
    how: str,
    work: Callable[[], Coroutine[Any, Any, None]],
    started: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    """Start `work`, wait for `started()`, then cancel it the way `how` says."""
    if how == "task.cancel":
        task = asyncio.create_task(work())
        await started()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(work)
                await started()
                scope.cancel()
        assert scope.cancelled_caught


@pytest.mark.parametrize("how", HOW)
async def test_cancelled_mid_statement_discards_the_connection_and_writes(
    db: Database, database: Database, how: str
) -> None:
    email = f"cancel-{uuid.uuid4().hex}@example.com"
    pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def work() -> None:
        async with db.unit_of_work() as uow:
            uow.session.add(Author(email=email, name="cancelled"))
            await uow.flush()
            backend = await uow.session.execute(text("SELECT pg_backend_pid()"))
            pid.set_result(backend.scalar_one())
            if how != "task.cancel":
                # A cancel scope cancels the driver's own cancel request too, so the
                # server learns of the cancellation only as a vanished client.
                await uow.session.execute(
                    text("SET LOCAL client_connection_check_interval = '100ms'")
                )
            await uow.session.execute(text("SELECT pg_sleep(60)"))
            await uow.commit()

    async def sleeping() -> None:
        assert await _wait_for_state(database, await pid, {"active:PgSleep"}) == "active:PgSleep"

    await _cancel_while(how, work, sleeping)

    # The connection was closed, not pooled: its backend stops sleeping and exits,
    # its transaction uncommitted.
    assert await _wait_for_state(database, pid.result(), {None}) is None
    assert await _rows(db, email) == 0
    if db.settings.pooler == "none":
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    # The pool's next connection works (it is a new one).
    assert await _backend_of_next_unit_of_work(db) != pid.result()


@pytest.mark.parametrize("how", HOW)
async def test_cancelled_between_statements_rolls_back_and_keeps_the_connection(
    migrated_url: str, database: Database, how: str
) -> None:
    """Cancelled while awaiting something else, the rollback still runs (it is shielded)."""
    email = f"cancel-{uuid.uuid4().hex}@example.com"
    pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def work() -> None:
        async with single.unit_of_work() as uow:
            uow.session.add(Author(email=email, name="cancelled"))
            await uow.flush()
            backend = await uow.session.execute(text("SELECT pg_backend_pid()"))
            pid.set_result(backend.scalar_one())
            await anyio.sleep_forever()

    async def waiting() -> None:
        state = await _wait_for_state(database, await pid, {"idle in transaction:ClientRead"})
        assert state == "idle in transaction:ClientRead"

    async with Database(migrated_url, pooler="none", pool_size=1, max_overflow=0) as single:
        await _cancel_while(how, work, waiting)
        assert await _backend_state(database, pid.result()) == "idle:ClientRead"
        assert await _rows(single, email) == 0
        assert await _backend_of_next_unit_of_work(single) == pid.result()
