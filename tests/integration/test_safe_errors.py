"""Errors are safe to log: no bound value in the error, its repr, its chain or its traceback.

Each error class is provoked for real with a secret-looking marker among the
bound values (in a unique key, a failing row, a foreign key, a value that fails
to cast or to encode). The error is then rendered every way a service logs it:
``str``, ``repr``, ``traceback.format_exception`` and ``logger.exception``.
The marker must be nowhere; the SQLSTATE and the names (constraint, table,
column) must stay. With ``HARBORDB_CHAIN_DRIVER_ERRORS=1`` the driver's own
exception is chained, values and all: that proves the search can find them.
"""

from __future__ import annotations

import io
import logging
import traceback
import uuid
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection
from tests.library.models import Author, Book
from tests.library.repositories import LibraryWork

from harbordb import (
    CheckViolation,
    Conflict,
    Database,
    DatabaseError,
    ForeignKeyViolation,
    IntegrityError,
)
from harbordb.errors import CHAIN_DRIVER_ERRORS_ENV, DriverError

SECRET_NUMBER = 918273645546372819


async def _author(connection: AsyncConnection) -> int:
    values = {"email": f"safe-{uuid.uuid4().hex}@example.com", "name": "safe"}
    result = await connection.execute(insert(Author).values(**values).returning(Author.id))
    return int(result.scalar_one())


def _cases(secret: str) -> dict[str, tuple[Callable[..., Awaitable[object]], type, list[str]]]:
    """name -> (provoke(uow, connection), expected class, names the rendering must keep)."""

    async def unique(uow: LibraryWork, connection: AsyncConnection) -> None:
        await connection.execute(insert(Author).values(email=secret, name="first"))
        await uow.authors.add(Author(email=secret, name="second"))

    async def check(uow: LibraryWork, connection: AsyncConnection) -> None:
        author = await _author(connection)
        await uow.books.add(Book(author_id=author, isbn=secret, title=secret, price_cents=-1))

    async def foreign_key(uow: LibraryWork, connection: AsyncConnection) -> None:
        book = Book(author_id=SECRET_NUMBER, isbn=secret, title="x", price_cents=1)
        await uow.books.add(book)

    async def not_null(uow: LibraryWork, connection: AsyncConnection) -> None:
        await uow.session.execute(insert(Author).values(email=secret, name=None))

    async def cast(uow: LibraryWork, connection: AsyncConnection) -> None:
        cast = text("SELECT CAST(CAST(:value AS text) AS integer)")  # the server casts
        await uow.session.execute(cast, {"value": secret})

    async def encode(uow: LibraryWork, connection: AsyncConnection) -> None:
        # $1 is an integer: asyncpg refuses the string, quoting it in its message.
        await uow.session.execute(text("SELECT CAST(:value AS integer)"), {"value": secret})

    return {
        "unique": (unique, Conflict, ["23505", "uq_authors_email", "authors"]),
        "check": (check, CheckViolation, ["23514", "ck_books_price_cents_non_negative"]),
        "foreign_key": (foreign_key, ForeignKeyViolation, ["23503", "books"]),
        "not_null": (not_null, IntegrityError, ["23502", "authors", "name"]),
        "cast": (cast, DatabaseError, ["22P02"]),
        "encode": (encode, DatabaseError, ["22000", "DataError"]),
    }


def _renderings(error: BaseException) -> dict[str, str]:
    stream = io.StringIO()
    logger = logging.getLogger(f"harbordb.test.{uuid.uuid4().hex}")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        try:
            raise error
        except BaseException:
            logger.exception("the unit of work failed")
    finally:
        logger.removeHandler(handler)
    return {
        "str": str(error),
        "repr": repr(error),
        "traceback": "".join(traceback.format_exception(error)),
        "logging": stream.getvalue(),
    }


async def _provoke(
    database: Database[LibraryWork], connection: AsyncConnection, case: str, secret: str
) -> BaseException:
    provoke, expected, _names = _cases(secret)[case]
    with pytest.raises(DatabaseError) as caught:
        async with database.unit_of_work(connection=connection) as uow:
            await provoke(uow, connection)
    assert type(caught.value) is expected
    return caught.value


@pytest.mark.parametrize("case", list(_cases("")))
async def test_no_bound_value_in_any_rendering(
    database: Database[LibraryWork],
    db_connection: AsyncConnection,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CHAIN_DRIVER_ERRORS_ENV, raising=False)
    secret = f"s3cr3t{uuid.uuid4().hex}"
    error = await _provoke(database, db_connection, case, secret)
    assert isinstance(error.__cause__, DriverError)
    assert error.__suppress_context__
    for how, rendered in _renderings(error).items():
        assert secret not in rendered, how
        assert str(SECRET_NUMBER) not in rendered, how
    rendered = _renderings(error)["traceback"]
    for name in _cases(secret)[case][2]:
        assert name in rendered, name


@pytest.mark.parametrize("case", ["unique", "check", "cast", "encode"])
async def test_the_opt_in_chains_the_drivers_exception_values_and_all(
    database: Database[LibraryWork],
    db_connection: AsyncConnection,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CHAIN_DRIVER_ERRORS_ENV, "1")
    secret = f"s3cr3t{uuid.uuid4().hex}"
    error = await _provoke(database, db_connection, case, secret)
    assert not isinstance(error.__cause__, DriverError)
    assert secret not in str(error)  # the error's own message stays clean even then
    assert secret in _renderings(error)["traceback"]


def test_the_engine_hides_parameters(database: Database[LibraryWork]) -> None:
    """The chained SQLAlchemy error (opt-in) never prints the statement's parameters."""
    assert database.engine.sync_engine.hide_parameters
