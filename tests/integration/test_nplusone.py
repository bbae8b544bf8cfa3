"""The N+1 detector of a unit of work: `awaitable_attrs` over many parents is caught."""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import lazyload, selectinload
from sqlalchemy.sql.base import ExecutableOption
from tests.library.models import Author, Book, Chapter, Genre

from harbordb import Database, count_queries
from harbordb.errors import ConfigurationError, LazyLoadDetected, NPlusOneWarning
from harbordb.nplusone import parse_nplusone_mode


def _line_of(marker: str) -> int:
    """The line of this file that carries `marker` in a comment."""
    lines = Path(__file__).read_text().splitlines()
    (line,) = [n for n, text in enumerate(lines, 1) if text.rstrip().endswith(f"# {marker}")]
    return line


@dataclass
class Data:
    authors: list[int]
    genre: int = 0


@pytest.fixture
async def data(database: Database, db_connection: AsyncConnection) -> Data:
    """Three authors with two books of two chapters each, the six books in one genre,
    inside the outer transaction."""
    async with database.unit_of_work(connection=db_connection, nplusone="off") as uow:
        tag = uuid.uuid4().hex
        genre = Genre(name=f"np-{tag}")
        authors = [Author(email=f"np-{i}-{tag}@example.com", name=str(i)) for i in range(3)]
        for i, author in enumerate(authors):
            author.books = [
                Book(
                    isbn=f"np-{i}-{n}-{tag}",
                    title=str(n),
                    price_cents=1,
                    genres=[genre],
                    chapters=[Chapter(number=c, title=str(c), pages=1) for c in (1, 2)],
                )
                for n in range(2)
            ]
        uow.session.add_all(authors)
        await uow.commit()
    return Data([a.id for a in authors], genre.id)


def _authors(data: Data, *options: ExecutableOption) -> Select[Author]:
    return select(Author).where(Author.id.in_(data.authors)).order_by(Author.id).options(*options)


async def test_raise_mode_stops_the_second_parents_load(
    database: Database, db_connection: AsyncConnection, data: Data
) -> None:
    loaded = []
    async with database.unit_of_work(connection=db_connection, nplusone="raise") as uow:
        authors = (await uow.session.scalars(_authors(data, lazyload(Author.books)))).all()
        caught: LazyLoadDetected | None = None
        with count_queries(database) as queries:
            try:
                for author in authors:
                    loaded.append(await author.awaitable_attrs.books)  # raise: here
            except LazyLoadDetected as exc:
                caught = exc
    assert caught is not None
    assert len(loaded) == 1  # the first parent's load is tolerated
    assert queries.count == 1  # the second was refused before its statement was sent
    message = str(caught)
    assert "Author.books" in message
    assert f"{__file__}:{_line_of('raise: here')}" in message


async def test_warn_mode_warns_once_per_attribute_at_the_callers_line(
    database: Database, db_connection: AsyncConnection, data: Data
) -> None:
    async with database.unit_of_work(connection=db_connection, nplusone="warn") as uow:
        authors = (await uow.session.scalars(_authors(data, lazyload(Author.books)))).all()
        with pytest.warns(NPlusOneWarning, match=r"Author\.books") as record:
            books = [await a.awaitable_attrs.books for a in authors]  # warn: here
    assert [len(b) for b in books] == [2, 2, 2]  # warn mode lets every load run
    assert len(record) == 1
    assert (record[0].filename, record[0].lineno) == (__file__, _line_of("warn: here"))


async def test_a_graph_walk_one_parent_at_a_time_is_caught_at_a_many_to_one(
    database: Database, db_connection: AsyncConnection, data: Data
) -> None:
    """The benchmark's W3 `nplus1` shape: one row, then each level awaited one parent at
    a time, down to a many-to-one (here one genre, its books, each book's author)."""
    plan = lazyload(Genre.books).lazyload(Book.author)
    statement = select(Genre).where(Genre.id == data.genre).options(plan)
    author_ids: list[int] = []
    async with database.unit_of_work(connection=db_connection, nplusone="raise") as uow:
        genre = (await uow.session.scalars(statement)).one()

        async def walk() -> None:
            for book in sorted(await genre.awaitable_attrs.books, key=lambda b: b.id):
                author_ids.append((await book.awaitable_attrs.author).id)

        # The second book is the second parent whose author is loaded.
        with pytest.raises(LazyLoadDetected, match=r"Book\.author loaded one parent"):
            await walk()
    assert author_ids == [data.authors[0]]


async def test_one_parent_and_load_plans_are_not_reported(
    database: Database, db_connection: AsyncConnection, data: Data
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with database.unit_of_work(connection=db_connection, nplusone="raise") as uow:
            one = (await uow.session.scalars(_authors(data, lazyload(Author.books)))).first()
            assert one is not None
            assert len(await one.awaitable_attrs.books) == 2
        async with database.unit_of_work(connection=db_connection, nplusone="raise") as uow:
            plan = selectinload(Author.books).selectinload(Book.chapters)
            authors = (await uow.session.scalars(_authors(data, plan))).all()
            assert [len(a.books) for a in authors] == [2, 2, 2]


async def _walk(session: AsyncSession, author_ids: list[int]) -> int:
    """The N+1 pattern: each author's books awaited one author at a time."""
    stmt = _authors(Data(author_ids), lazyload(Author.books))
    authors = (await session.scalars(stmt)).all()
    return sum([len(await author.awaitable_attrs.books) for author in authors])


async def test_off_other_units_of_work_and_plain_sessions_are_unaffected(
    database: Database, db_connection: AsyncConnection, data: Data
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with database.unit_of_work(connection=db_connection, nplusone="off") as uow:
            assert await _walk(uow.session, data.authors) == 6
        # Counts are per unit of work: one parent in each of two is no N+1.
        for author in data.authors[:2]:
            async with database.unit_of_work(connection=db_connection, nplusone="raise") as uow:
                assert await _walk(uow.session, [author]) == 2
        # The detector watches its own session only, not every session.
        async with database.unit_of_work(nplusone="raise"):
            plain = AsyncSession(bind=db_connection, join_transaction_mode="create_savepoint")
            try:
                assert await _walk(plain, data.authors) == 6
            finally:
                await plain.close()


@pytest.mark.parametrize(
    ("value", "mode"),
    [("raise", "raise"), (" WARN ", "warn"), ("off", None), ("", None), (None, None)],
)
def test_modes_from_configuration(value: str | None, mode: str | None) -> None:
    assert parse_nplusone_mode(value) == mode


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="nplusone"):
        parse_nplusone_mode("loud")


async def test_the_environment_sets_the_default_and_a_unit_of_work_overrides_it(
    migrated_url: str, data: Data, db_connection: AsyncConnection
) -> None:
    """HARBORDB_NPLUSONE=raise turns the detector on for every unit of work."""
    async with Database(migrated_url, environ={"HARBORDB_NPLUSONE": "raise"}) as db:
        assert db.settings.nplusone == "raise"
        async with db.unit_of_work(connection=db_connection) as uow:
            query = _authors(data, lazyload(Author.books))
            authors = (await uow.session.scalars(query)).all()
            with pytest.raises(LazyLoadDetected, match=r"Author\.books"):
                [await author.awaitable_attrs.books for author in authors]  # 2nd raises
        async with db.unit_of_work(connection=db_connection, nplusone="off") as uow:
            authors = (await uow.session.scalars(query)).all()
            for author in authors:
                await author.awaitable_attrs.books  # off: loads run, nothing raised
            assert all(len(a.books) == 2 for a in authors)
