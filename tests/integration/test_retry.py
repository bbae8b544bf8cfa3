"""`Database.run`: the whole transaction function re-runs on real conflicts, commits once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import func, insert, select, update
from tests.library.models import Author, Book
from tests.library.seed import delete_seeded, seed_books

from harbordb import Database, count_queries
from harbordb.errors import ConfigurationError, Conflict, DatabaseError, Retryable
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
