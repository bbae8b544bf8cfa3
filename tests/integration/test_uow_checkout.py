"""A unit of work checks out its own connection when the block starts and opens its
session on that connection when the block first uses it (`harbordb.checkout`)."""

from __future__ import annotations

import asyncio
import gc
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import anyio
import pytest
from benchmarks.counting import count_round_trips
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from tests.integration.observing import direct_statements
from tests.library.models import Author
from tests.library.repositories import AuthorRepository

from harbordb import Database, checkout, count_queries

HOW = ["task.cancel", "anyio cancel scope"]


@pytest.fixture
async def small(migrated_url: str) -> AsyncIterator[Database]:
    """Direct, one pooled connection and one overflow connection."""
    async with Database(migrated_url, pooler="none", pool_size=1, max_overflow=1) as db:
        yield db


def _checked_out(db: Database) -> int:
    return int(db.engine.pool.checkedout())  # type: ignore[attr-defined]


async def test_the_session_opens_on_the_connection_checked_out_at_the_start(
    small: Database,
) -> None:
    async with small.unit_of_work(read_only=True) as uow:
        assert _checked_out(small) == 1  # at `async with`: an unreachable server fails there
        session = uow.session
        assert uow.session is session
        read_only = await session.scalar(text("SELECT current_setting('transaction_read_only')"))
        assert read_only == "on"  # BEGIN READ ONLY, on that connection
        assert _checked_out(small) == 1  # no second checkout
    assert _checked_out(small) == 0


async def test_a_session_taken_and_unused_and_an_empty_commit_send_nothing(
    database: Database,
) -> None:
    db = database
    called: list[str] = []
    async with db.unit_of_work(read_only=True):
        pass  # a connection just checked in: no connect, no ping below
    with count_queries(db) as queries, count_round_trips() as trips:
        async with db.unit_of_work(read_only=True) as uow:
            assert uow.session is not None
        async with db.unit_of_work() as uow:
            uow.after_commit(lambda: called.append("after"))
            await uow.commit()
    assert (queries.count, trips[0], called) == (0, 0, ["after"])


async def test_an_overflow_connection_is_closed_when_its_unit_of_work_ends(
    small: Database,
) -> None:
    async with small.unit_of_work(read_only=True) as first:
        async with small.unit_of_work(read_only=True) as second:  # the overflow connection
            assert _checked_out(small) == 2
            await second.session.execute(text("SELECT 1"))
        async with small.unit_of_work(read_only=True):  # another overflow, left empty
            assert _checked_out(small) == 2
        assert (await first.session.execute(text("SELECT 2"))).scalar_one() == 2
    assert _checked_out(small) == 0
    assert small.engine.pool.overflow() <= 0  # type: ignore[attr-defined]


async def _cancel_while_inside(
    how: str, work: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
) -> None:
    """Run `work` until it sets the event it is given, then cancel it the way `how` says."""
    inside = asyncio.Event()
    if how == "task.cancel":
        task = asyncio.create_task(work(inside))
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(work, inside)
                await inside.wait()
                scope.cancel()
        assert scope.cancelled_caught


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("uses_session", [False, True])
async def test_a_unit_of_work_cancelled_inside_gives_its_connection_back(
    one_connection_db: Database, how: str, uses_session: bool
) -> None:
    db = one_connection_db

    async def work(inside: asyncio.Event) -> None:
        async with db.unit_of_work(read_only=True) as uow:
            if uses_session:
                await uow.session.execute(text("SELECT 1"))
            inside.set()
            await anyio.sleep_forever()

    await _cancel_while_inside(how, work)
    if db.settings.pooler == "none":
        assert _checked_out(db) == 0
    # The slot and the connection are free: the next unit of work gets them at once.
    async with db.unit_of_work(read_only=True, timeout=5) as uow:
        assert (await uow.session.execute(text("SELECT 1"))).scalar_one() == 1


async def test_a_finished_unit_of_work_is_freed_without_the_garbage_collector(
    db: Database,
) -> None:
    gc.collect()
    gc.disable()
    try:
        async with db.unit_of_work(read_only=True) as uow:
            await uow.session.execute(text("SELECT 1"))
        finished = weakref.ref(uow)
        del uow
        assert finished() is None  # no reference cycle through the session's info
    finally:
        gc.enable()


async def test_a_unit_of_work_that_read_on_the_driver_is_freed_without_the_collector(
    db: Database,
) -> None:
    """A read on the driver (here a repository's) remembers the session's connection
    and transaction in the session's info: no cycle is left through it at the end."""
    gc.collect()
    gc.disable()
    try:
        async with db.unit_of_work(read_only=True) as uow:
            assert await uow.repository(AuthorRepository).get_or_none(-1) is None
            session = weakref.ref(uow.session.sync_session)
        del uow
        assert session() is None
    finally:
        gc.enable()


async def test_a_read_on_the_driver_begins_no_session_transaction(db: Database) -> None:
    """A repository read on a unit of work's own connection needs no transaction of the
    session's; a write after it begins one on that connection and commits."""
    email = f"checkout-{uuid.uuid4().hex}@example.com"
    try:
        async with db.unit_of_work() as uow:
            with count_queries(db) as queries:
                assert await uow.repository(AuthorRepository).get_or_none(-1) is None
            assert queries.count == 1
            assert uow.session.sync_session.get_transaction() is None
            uow.session.add(Author(email=email, name="Ada"))
            await uow.commit()
        async with db.unit_of_work(read_only=True) as uow:
            found = await uow.session.scalar(select(Author.name).where(Author.email == email))
        assert found == "Ada"
    finally:
        async with db.unit_of_work() as uow:
            await uow.session.execute(delete(Author).where(Author.email == email))
            await uow.commit()


async def test_a_snapshot_the_driver_began_is_the_sessions_too(db: Database) -> None:
    """At REPEATABLE READ the read begins the transaction on the driver; the session's
    statements after it run in that transaction, on its snapshot."""
    email = f"checkout-{uuid.uuid4().hex}@example.com"
    count = select(func.count()).select_from(Author).where(Author.email == email)
    try:
        async with db.unit_of_work(isolation_level="REPEATABLE READ", read_only=True) as uow:
            assert await uow.repository(AuthorRepository).get_or_none(-1) is None
            assert uow.session.sync_session.get_transaction() is None
            async with db.unit_of_work() as other:
                other.session.add(Author(email=email, name="Ada"))
                await other.commit()
            assert await uow.session.scalar(count) == 0  # the snapshot of the read
            level = await uow.session.scalar(
                text("SELECT current_setting('transaction_isolation')")
            )
            assert level == "repeatable read"
        async with db.unit_of_work(read_only=True) as uow:
            assert await uow.session.scalar(count) == 1
    finally:
        async with db.unit_of_work() as uow:
            await uow.session.execute(delete(Author).where(Author.email == email))
            await uow.commit()


async def test_a_session_on_a_connection_of_its_callers_begins_its_transaction(
    db: Database,
) -> None:
    """Only a unit of work's own connection reads without the session's transaction:
    on the caller's, that transaction ends whatever the read began."""
    async with db.engine.connect() as connection:
        await connection.execution_options(isolation_level="REPEATABLE READ")
        session = AsyncSession(connection)
        assert await AuthorRepository(session).get_or_none(-1) is None
        assert session.sync_session.get_transaction() is not None
        await session.close()
        assert not connection.in_transaction()


async def test_with_statement_observers_a_read_begins_the_sessions_transaction(
    db: Database,
) -> None:
    """The unit of work's span hangs off the session's transaction."""
    with direct_statements(db):
        async with db.unit_of_work() as uow:
            assert await uow.repository(AuthorRepository).get_or_none(-1) is None
            assert uow.session.sync_session.get_transaction() is not None


async def test_a_connection_is_returned_unshielded_only_while_nothing_is_begun(
    small: Database,
) -> None:
    """`checkout.sends_nothing_back` reads the asyncpg adapter's ``_transaction``
    (non-public): it must tell a connection with BEGIN sent from one without."""
    async with small.unit_of_work(read_only=True) as uow:
        connection = (await uow.session.connection()).sync_connection
        assert checkout.sends_nothing_back(connection)  # begun in SQLAlchemy only
        await uow.session.execute(text("SELECT 1"))
        assert not checkout.sends_nothing_back(connection)  # BEGIN went out: ROLLBACK due
    async with (
        small.unit_of_work(read_only=True),
        small.unit_of_work(read_only=True) as second,
    ):
        overflow = (await second.session.connection()).sync_connection
        assert not checkout.sends_nothing_back(overflow)  # the pool will close it
