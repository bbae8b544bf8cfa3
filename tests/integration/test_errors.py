"""Real PostgreSQL errors come out of a unit of work as `harbordb.errors`.

Each error class is provoked for real. Every translated error must carry the
SQLSTATE, chain a `DriverError` summary of the driver's exception, and keep
bound values (here a secret-looking marker) out of its message.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import pytest
from sqlalchemy import Update, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from tests.library.models import Author, Book
from tests.library.seed import delete_seeded, seed_books

from harbordb import Database
from harbordb.errors import (
    CheckViolation,
    Conflict,
    DatabaseError,
    DriverError,
    ForeignKeyViolation,
    IntegrityError,
    Retryable,
    Timeout,
    Unavailable,
    translate,
    translating,
)


def _secret() -> str:
    return f"s3cr3t-{uuid.uuid4().hex}"


def _assert_translated(
    error: BaseException, sqlstate: str | None, secret: str | None = None
) -> None:
    assert isinstance(error, DatabaseError)
    assert error.sqlstate == sqlstate
    assert f"SQLSTATE {sqlstate}" in str(error)
    if secret is not None:
        assert secret not in str(error)
        assert secret not in repr(error)
    assert isinstance(error.__cause__, DriverError)
    assert error.__cause__.names.get("sqlstate") == sqlstate


@dataclass
class Rows:
    first: int
    second: int


@pytest.fixture
async def books(database: Database) -> AsyncIterator[Rows]:
    """Two committed books with 10 copies each (deleted afterwards)."""
    first, second = await seed_books(database, "errors", [10, 10])
    yield Rows(first.id, second.id)
    await delete_seeded(database, "errors")


# -- integrity ----------------------------------------------------------------


async def test_unique_violation_is_a_conflict_naming_its_constraint(
    database: Database, db_connection: AsyncConnection
) -> None:
    email = f"{_secret()}@example.com"
    await db_connection.execute(insert(Author).values(email=email, name="first"))
    with pytest.raises(Conflict) as caught:
        async with database.unit_of_work(connection=db_connection) as uow:
            await uow.session.execute(insert(Author).values(email=email, name="second"))
    _assert_translated(caught.value, "23505", email)
    assert caught.value.constraint == "uq_authors_email"
    assert "uq_authors_email" in str(caught.value)


async def test_foreign_key_violation(database: Database, db_connection: AsyncConnection) -> None:
    secret = _secret()

    async def book_of_nobody() -> None:
        async with database.unit_of_work(connection=db_connection) as uow:
            uow.session.add(Book(author_id=987_654_321, isbn=secret, title=secret, price_cents=1))
            await uow.flush()

    with pytest.raises(ForeignKeyViolation) as caught:
        await book_of_nobody()
    _assert_translated(caught.value, "23503", secret)
    assert caught.value.constraint == "fk_books_author_id_authors"


async def test_check_violation(database: Database, db_connection: AsyncConnection) -> None:
    secret = _secret()

    async def negative_price() -> None:
        async with database.unit_of_work(connection=db_connection) as uow:
            author = Author(email=secret, name=secret)
            author.books = [Book(isbn=secret, title=secret, price_cents=-1)]
            uow.session.add(author)
            await uow.commit()

    with pytest.raises(CheckViolation) as caught:
        await negative_price()
    _assert_translated(caught.value, "23514", secret)
    assert caught.value.constraint == "ck_books_price_cents_non_negative"


async def test_other_integrity_errors_keep_the_base_class(
    database: Database, db_connection: AsyncConnection
) -> None:
    secret = _secret()
    with pytest.raises(IntegrityError) as caught:
        async with database.unit_of_work(connection=db_connection) as uow:
            await uow.session.execute(
                text("INSERT INTO authors (email, name) VALUES (:email, NULL)"),
                {"email": secret},
            )
    assert type(caught.value) is IntegrityError
    _assert_translated(caught.value, "23502", secret)  # not_null_violation


@pytest.mark.parametrize(
    ("sql", "sqlstate"),
    [
        # PostgreSQL's message quotes the value it could not parse.
        ("SELECT CAST(CAST(:value AS text) AS integer)", "22P02"),
        # asyncpg refuses to encode it, quoting it, before anything is sent.
        ("SELECT CAST(:value AS integer)", "22000"),
    ],
)
async def test_messages_quoting_values_are_not_passed_on(
    database: Database, sql: str, sqlstate: str
) -> None:
    secret = _secret()
    with pytest.raises(DatabaseError) as caught:
        async with database.unit_of_work() as uow:
            await uow.session.execute(text(sql), {"value": secret})
    _assert_translated(caught.value, sqlstate, secret)
    assert secret not in str(caught.value.__cause__)


# -- races ----------------------------------------------------------------------


async def test_serialization_failure_is_retryable(database: Database, books: Rows) -> None:
    """Two SERIALIZABLE transactions read the same copies; the second to write loses."""
    stock = select(Book.copies).where(Book.id == books.first)
    first = database.unit_of_work(isolation_level="SERIALIZABLE")
    second = database.unit_of_work(isolation_level="SERIALIZABLE")

    async def both_decrement() -> None:
        async with first, second:
            before = (await first.session.execute(stock)).scalar_one()
            assert (await second.session.execute(stock)).scalar_one() == before
            decrement = update(Book).where(Book.id == books.first)
            await first.session.execute(decrement.values(copies=before - 1))
            await first.commit()
            await second.session.execute(decrement.values(copies=before - 1))
            await second.commit()

    with pytest.raises(Retryable) as caught:
        await both_decrement()
    _assert_translated(caught.value, "40001")
    assert first.committed
    assert not second.committed


async def _wait_until_blocked(database: Database, pid: int) -> None:
    """Poll pg_stat_activity until backend `pid` waits for a lock."""
    query = text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid")
    with anyio.fail_after(20):
        while True:
            async with database.engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                if (await autocommit.execute(query, {"pid": pid})).scalar() == "Lock":
                    return
            await asyncio.sleep(0.02)


def _touch(book_id: int) -> Update:
    """An UPDATE that changes nothing but takes the row lock."""
    return update(Book).where(Book.id == book_id).values(copies=Book.copies)


async def test_deadlock_is_retryable(database: Database, books: Rows) -> None:
    """A locks row 1, B locks row 2, A waits for row 2, B asks for row 1."""
    async with database.unit_of_work() as a, database.unit_of_work() as b:
        await a.session.execute(_touch(books.first))
        await b.session.execute(_touch(books.second))
        pid_a = (await a.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()

        async def touch(session: AsyncSession, book_id: int) -> None:
            with translating():  # what the unit of work would do as the error left it
                await session.execute(_touch(book_id))

        blocked = asyncio.create_task(touch(a.session, books.second))
        await _wait_until_blocked(database, pid_a)
        results = await asyncio.gather(
            blocked, touch(b.session, books.first), return_exceptions=True
        )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1, results
    assert isinstance(failures[0], Retryable)
    _assert_translated(failures[0], "40P01")


# -- timeouts -------------------------------------------------------------------


async def test_statement_timeout(database: Database) -> None:
    with pytest.raises(Timeout) as caught:
        async with database.unit_of_work(statement_timeout=0.05) as uow:
            await uow.session.execute(text("SELECT pg_sleep(30)"))
    _assert_translated(caught.value, "57014")


async def test_lock_timeout(database: Database, books: Rows) -> None:
    locked = select(Book).where(Book.id == books.first).with_for_update()
    async with database.unit_of_work() as holder:
        await holder.session.execute(locked)
        with pytest.raises(Timeout) as caught:
            async with database.unit_of_work(lock_timeout=0.05) as waiter:
                await waiter.session.execute(locked)
    _assert_translated(caught.value, "55P03")


# -- lost connections -------------------------------------------------------------


@pytest.mark.parametrize("pooler", ["direct", "pgbouncer"])
async def test_a_terminated_backend_is_unavailable(
    pooler: str, database: Database, migrated_url: str, request: pytest.FixtureRequest
) -> None:
    if pooler == "direct":
        db = Database(migrated_url, pooler="none", pool_size=1, max_overflow=0)
    else:
        db = Database(request.getfixturevalue("pgbouncer").url, pooler="external")

    async def terminated() -> None:
        async with db.unit_of_work() as uow:
            pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with database.engine.connect() as admin:
                terminate = text("SELECT pg_terminate_backend(:pid, 5000)")
                assert (await admin.execute(terminate, {"pid": pid})).scalar_one()
            await uow.session.execute(text("SELECT 1"))

    async with db:
        with pytest.raises(Unavailable) as caught:
            await terminated()
        assert isinstance(caught.value.__cause__, DriverError)
        async with db.unit_of_work() as uow:  # the pool recovers
            assert (await uow.session.execute(text("SELECT 1"))).scalar_one() == 1


async def test_an_unreachable_server_is_unavailable() -> None:
    async with Database("postgresql://app@127.0.0.1:1/harbor") as db:
        with pytest.raises(Unavailable) as caught:
            async with db.unit_of_work():
                pass
    assert isinstance(caught.value.__cause__, DriverError)
    assert caught.value.__cause__.driver_class == "builtins.ConnectionRefusedError"


# -- translate() and translating() ----------------------------------------------------


def test_errors_that_are_not_the_databases_pass_through() -> None:
    assert translate(ValueError("no")) is None
    assert translate(KeyError("nor is this")) is None
    with pytest.raises(KeyError), translating():
        raise KeyError("passes through")
