"""`Database.run`: the whole transaction function re-runs on real conflicts, commits once."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import anyio
import pytest
from sqlalchemy import func, insert, select, text, update
from tests.library.models import Author, Book
from tests.library.seed import delete_seeded, seed_books

from harbordb import Database, count_queries, normalize_url
from harbordb.errors import (
    ConfigurationError,
    Conflict,
    DatabaseError,
    Retryable,
    Unavailable,
)
from harbordb.retry import BASE_DELAY, MAX_DELAY, backoff_delay
from harbordb.uow import UnitOfWork


@dataclass
class Rows:
    first: int
    second: int


@pytest.fixture
async def books(database: Database) -> AsyncIterator[Rows]:
    """Two committed books with 0 copies (deleted afterwards)."""
    first, second = await seed_books(database, "retry", [0, 0])
    yield Rows(first.id, second.id)
    await delete_seeded(database, "retry")


async def _copies(db: Database, book_id: int) -> int:
    async with db.unit_of_work(read_only=True) as uow:
        result = await uow.session.execute(select(Book.copies).where(Book.id == book_id))
        return result.scalar_one()


async def _increment(uow: UnitOfWork, book_id: int) -> None:
    """Read, then write back plus one: a lost update unless the database intervenes."""
    row = select(Book.copies).where(Book.id == book_id)
    copies = (await uow.session.execute(row)).scalar_one()
    await uow.session.execute(update(Book).where(Book.id == book_id).values(copies=copies + 1))


async def _increment_locked(uow: UnitOfWork, book_id: int) -> None:
    """`_increment` reading with FOR UPDATE: a rerun that starts while the deadlock's
    survivor still holds the row waits for its commit instead of reading the old value."""
    row = select(Book.copies).where(Book.id == book_id).with_for_update()
    copies = (await uow.session.execute(row)).scalar_one()
    await uow.session.execute(update(Book).where(Book.id == book_id).values(copies=copies + 1))


async def test_serialization_failures_rerun_until_each_operation_commits_once(
    db: Database, books: Rows
) -> None:
    operations = 4
    everyone_has_read = asyncio.Barrier(operations)
    attempts: Counter[int] = Counter()
    commits: Counter[int] = Counter()

    async def increment(op: int) -> int:
        async def fn(uow: UnitOfWork) -> int:
            attempts[op] += 1
            row = select(Book.copies).where(Book.id == books.first)
            copies = (await uow.session.execute(row)).scalar_one()
            if attempts[op] == 1:
                await everyone_has_read.wait()  # all first attempts collide
            await uow.session.execute(
                update(Book).where(Book.id == books.first).values(copies=copies + 1)
            )
            uow.after_commit(lambda: commits.update([op]))
            return op

        return await db.run(fn, retries=20, isolation_level="SERIALIZABLE")

    results = await asyncio.gather(*(increment(op) for op in range(operations)))

    assert sorted(results) == list(range(operations))
    assert await _copies(db, books.first) == operations
    assert commits == dict.fromkeys(range(operations), 1)
    assert attempts.total() >= 2 * operations - 1  # every first attempt but one lost


async def test_a_deadlock_reruns_the_losing_operation(database: Database, books: Rows) -> None:
    both_hold_their_first_row = asyncio.Barrier(2)
    attempts: Counter[str] = Counter()
    commits: Counter[str] = Counter()

    async def run(name: str, first: int, second: int) -> None:
        async def fn(uow: UnitOfWork) -> None:
            attempts[name] += 1
            await _increment_locked(uow, first)
            if attempts[name] == 1:
                await both_hold_their_first_row.wait()
            await _increment_locked(uow, second)
            uow.after_commit(lambda: commits.update([name]))

        await database.run(fn, retries=3)

    await asyncio.gather(run("ab", books.first, books.second), run("ba", books.second, books.first))

    assert await _copies(database, books.first) == 2
    assert await _copies(database, books.second) == 2
    assert commits == {"ab": 1, "ba": 1}
    assert attempts.total() == 3  # one of the two was chosen as the deadlock victim


async def test_retries_run_out_on_a_conflict_every_time(database: Database, books: Rows) -> None:
    """A rival commits between every attempt's read and write; the last error propagates."""
    attempts = 0

    async def fn(uow: UnitOfWork) -> None:
        nonlocal attempts
        attempts += 1
        await _increment(uow, books.second)  # takes the snapshot
        async with database.unit_of_work() as rival:
            await _increment(rival, books.first)
            await rival.commit()
        await _increment(uow, books.first)

    with pytest.raises(Retryable) as caught:
        await database.run(fn, retries=2, isolation_level="REPEATABLE READ")
    assert caught.value.sqlstate == "40001"
    assert attempts == 3
    assert await _copies(database, books.first) == 3  # the rival's, each once
    assert await _copies(database, books.second) == 0  # never committed


async def test_other_errors_propagate_at_once(database: Database, books: Rows) -> None:
    email = f"retry-{uuid.uuid4().hex}@example.com"
    attempts = 0

    async def duplicate(uow: UnitOfWork) -> None:
        nonlocal attempts
        attempts += 1
        await _increment(uow, books.first)
        await uow.session.execute(insert(Author).values(email=email, name="a"))
        await uow.session.execute(insert(Author).values(email=email, name="b"))

    with pytest.raises(Conflict):
        await database.run(duplicate)
    assert attempts == 1

    async def read_only_write(uow: UnitOfWork) -> None:
        nonlocal attempts
        attempts += 1
        await _increment(uow, books.first)

    with pytest.raises(DatabaseError) as caught:
        await database.run(read_only_write, read_only=True)
    assert caught.value.sqlstate == "25006"
    assert attempts == 2

    async def bug(uow: UnitOfWork) -> None:
        nonlocal attempts
        attempts += 1
        await _increment(uow, books.first)
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await database.run(bug)
    assert attempts == 3
    assert await _copies(database, books.first) == 0


async def test_run_commits_and_returns_the_result(database: Database, books: Rows) -> None:
    async def fn(uow: UnitOfWork) -> str:
        await _increment(uow, books.first)
        return "done"

    assert await database.run(fn) == "done"
    assert await _copies(database, books.first) == 1

    async def commits_itself(uow: UnitOfWork) -> int:
        await _increment(uow, books.first)
        await uow.commit()
        return 2

    assert await database.run(commits_itself) == 2
    assert await _copies(database, books.first) == 2


@pytest.mark.parametrize("retries", [-1, 1.5, True])
async def test_bad_retries_are_refused_before_any_sql(database: Database, retries: object) -> None:
    async def fn(uow: UnitOfWork) -> int:
        return (await uow.session.execute(select(func.count()))).scalar_one()

    with count_queries(database) as queries, pytest.raises(ConfigurationError):
        await database.run(fn, retries=retries)  # type: ignore[arg-type]
    assert queries.count == 0


def test_backoff_is_jittered_and_capped() -> None:
    for attempt in range(12):
        cap = min(MAX_DELAY, BASE_DELAY * 2**attempt)
        delays = [backoff_delay(attempt) for _ in range(200)]
        assert all(0.0 <= delay <= cap for delay in delays)
        assert len(set(delays)) > 100  # random, not a fixed schedule
        assert max(delays) > cap / 2


@pytest.fixture
async def refused_role(database: Database) -> AsyncIterator[str]:
    """A login role with CONNECTION LIMIT 0: every connect is refused with 53300."""
    role = f"retry_{uuid.uuid4().hex[:8]}"
    async with database.engine.connect() as admin:
        await admin.execute(text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0'))
        await admin.commit()
    yield role
    async with database.engine.connect() as admin:
        await admin.execute(text(f'DROP ROLE "{role}"'))
        await admin.commit()


class _Retried(logging.Handler):
    """Sets `event` at the first re-run `Database.run` logs."""

    def __init__(self) -> None:
        super().__init__()
        self.event = anyio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.event.set()


@pytest.fixture
def retried() -> Iterator[_Retried]:
    handler = _Retried()
    logger = logging.getLogger("harbordb.retry")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_run_reruns_when_the_server_refuses_the_connection(
    database: Database, migrated_url: str, refused_role: str, retried: _Retried
) -> None:
    """53300 while opening the unit of work: nothing was sent, so `run` tries again, and
    succeeds once the server accepts connections."""
    url = normalize_url(migrated_url).set(username=refused_role).render_as_string(False)
    calls: list[int] = []

    async def work(uow: UnitOfWork) -> int:
        calls.append(1)
        return int(await uow.session.scalar(text("SELECT 7")) or 0)

    results: list[int] = []
    async with Database(url, pooler="none") as refused:

        async def call() -> None:
            results.append(await refused.run(work, retries=100))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await retried.event.wait()
                async with database.engine.connect() as admin:
                    await admin.execute(text(f'ALTER ROLE "{refused_role}" CONNECTION LIMIT -1'))
                    await admin.commit()
    assert results == [7]
    assert calls == [1]  # the function ran once: only opening was repeated
    assert "database unavailable before the work started (SQLSTATE 53300)" in retried.messages[0]


async def test_run_does_not_rerun_a_wait_that_ran_out(migrated_url: str, retried: _Retried) -> None:
    """A pool with no free connection within pool_timeout: re-running would only wait again."""
    async with (
        Database(
            migrated_url, pooler="none", pool_size=1, max_overflow=0, pool_timeout=0.2
        ) as small,
        small.unit_of_work(),
    ):
        with pytest.raises(Unavailable) as caught:
            await small.run(lambda uow: uow.session.scalar(text("SELECT 1")), retries=3)
    assert caught.value.waited
    assert retried.messages == []


async def test_run_does_not_rerun_once_the_function_started(
    database: Database, retried: _Retried
) -> None:
    """`Unavailable` raised by the function itself (the connection died under it) propagates:
    some of its statements may have run."""
    calls: list[int] = []

    async def work(uow: UnitOfWork) -> None:
        calls.append(1)
        raise Unavailable("connection lost mid-work")

    with pytest.raises(Unavailable):
        await database.run(work, retries=3)
    assert calls == [1]
    assert retried.messages == []


async def test_run_does_not_rerun_a_connect_timeout(retried: _Retried) -> None:
    """A server that accepts TCP but never answers: connect_timeout runs out once, no re-run."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        url = f"postgresql://app@127.0.0.1:{port}/silent"
        async with Database(url, pooler="none", connect_timeout=0.3) as db:
            with pytest.raises(Unavailable) as caught:
                await db.run(lambda uow: uow.session.scalar(text("SELECT 1")), retries=3)
    assert caught.value.waited
    assert retried.messages == []
