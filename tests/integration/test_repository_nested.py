"""A `get` or a page with its collections nested in one statement
(`harbordb.repository.nested`), directly and through PgBouncer.

The objects must be the ones SQLAlchemy's own loading makes: compared value by
value with a `selectinload` read, one identity map, change tracking and flush,
``populate_existing``; and reads stay right (or fail clearly) when the schema
changes under live pooled connections.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import BigInteger, ForeignKey, Integer, MetaData, bindparam, inspect, select, text
from sqlalchemy.dialects.postgresql import CITEXT
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload
from tests.integration.observing import direct_statements
from tests.library.models import Author, Book, BookStatus, Chapter, Genre
from tests.library.repositories import CatalogRepository

from harbordb import Database, count_queries
from harbordb.errors import DatabaseError
from harbordb.repository import Repository, keyset_query


class AuthorTrees(Repository[Author]):
    """Two collections under a collection, and a many-to-one inside a nested level."""

    model = Author
    load = ("books.chapters.book", "books.genres")


async def seed(session: AsyncSession) -> tuple[int, list[int]]:
    """An author with three books: two chapters each and two shared genres, except the
    last, which has neither (its collections are empty)."""
    prefix = uuid.uuid4().hex[:8]
    genres = [Genre(name=f"{prefix}-g{i}") for i in range(2)]
    author = Author(email=f"{prefix}@example.com", name="Ada")
    books = [
        Book(
            author=author,
            title=f"{prefix}-{i}",
            isbn=f"{prefix}-{i}",
            price_cents=100 + i,
            status=BookStatus.OUT_OF_PRINT if i == 1 else BookStatus.DRAFT,
            chapters=[Chapter(number=j + 1, title=f"c{i}{j}", pages=10 + j) for j in range(2)]
            if i < 2
            else [],
            genres=genres if i < 2 else [],
        )
        for i in range(3)
    ]
    session.add_all(books)
    await session.flush()
    ids = (author.id, [book.id for book in books])
    session.expunge_all()
    return ids


def values(obj: Any) -> tuple[Any, ...]:
    """Every column attribute of `obj`, with its type."""
    keys = inspect(obj).mapper.column_attrs.keys()
    return tuple((key, type(getattr(obj, key)), getattr(obj, key)) for key in keys)


def tree(author: Author) -> Any:
    """The whole graph as plain values, collections in their order."""
    return (
        values(author),
        [
            (
                values(book),
                [values(chapter) for chapter in book.chapters],
                sorted(values(genre) for genre in book.genres),
            )
            for book in author.books
        ],
    )


async def test_nested_objects_equal_sqlalchemys_own_loading(
    db: Database, session: AsyncSession
) -> None:
    author_id, book_ids = await seed(session)
    with count_queries(db) as queries, direct_statements(db) as direct:
        author = await AuthorTrees(session).get(author_id)
    assert queries.count == 1, queries.report()
    assert direct == queries.statements
    read = tree(author)
    assert [book.id for book in author.books] == book_ids  # order_by Book.id
    assert author.books[2].chapters == []
    assert author.books[2].genres == []
    assert author.books[0].genres[0] is author.books[1].genres[0]  # one identity map
    assert all(c.book is b for b in author.books for c in b.chapters)  # joined in the record
    assert type(author.books[1].status) is BookStatus
    for obj in [author, *author.books, *author.books[0].chapters, *author.books[0].genres]:
        state = inspect(obj)
        assert state.persistent
        assert state.session is session.sync_session
        assert not state.modified
        assert not state.expired_attributes
    assert not session.sync_session.dirty
    with count_queries(db) as lazy:
        assert tree(author) == read  # everything loaded: no statement
    assert lazy.count == 0
    session.expunge_all()
    books = selectinload(Author.books)
    plain = (
        await session.scalars(
            select(Author)
            .where(Author.id == author_id)
            .options(
                books.selectinload(Book.chapters).joinedload(Chapter.book),
                books.selectinload(Book.genres),
            )
        )
    ).one()
    assert tree(plain) == read


async def test_nested_objects_change_and_flush(db: Database, session: AsyncSession) -> None:
    author_id, _ = await seed(session)
    trees = AuthorTrees(session)
    author = await trees.get(author_id)
    author.books[0].chapters[0].title = "changed"
    author.books[0].chapters.append(Chapter(number=3, title="added", pages=1))
    author.books[1].genres.remove(author.books[1].genres[0])
    author.books[2].status = BookStatus.OUT_OF_PRINT
    assert session.sync_session.dirty
    await session.flush()
    session.expunge_all()
    again = await trees.get(author_id)
    assert [c.title for c in again.books[0].chapters] == ["changed", "c01", "added"]
    assert len(again.books[1].genres) == 1
    assert again.books[2].status is BookStatus.OUT_OF_PRINT


async def test_a_nested_page_with_populate_existing_overwrites(
    db: Database, session: AsyncSession
) -> None:
    author_id, book_ids = await seed(session)
    books = CatalogRepository(session)  # chapters and genres
    keys = books.sort_keys(("isbn",))
    filters = [Book.author_id == bindparam("author")]
    query = keyset_query(books.select_loaded(), filters, keys, resume=False)
    query = query.execution_options(populate_existing=True)

    async def page() -> list[Book]:
        found = await books.keyset_page(
            query, keys, after=None, limit=5, conditions=filters, params={"author": author_id}
        )
        return list(found.items)

    first = await page()  # the query's first run: through SQLAlchemy
    await session.execute(
        text("UPDATE chapters SET pages = 99 WHERE book_id = :b"), {"b": book_ids[0]}
    )
    await session.execute(text("DELETE FROM book_genres WHERE book_id = :b"), {"b": book_ids[1]})
    await session.execute(text("UPDATE books SET title = 'new' WHERE id = :b"), {"b": book_ids[2]})
    with count_queries(db) as queries, direct_statements(db) as direct:
        again = await page()
    assert queries.count == 1
    assert direct == queries.statements
    assert again == first  # the same objects, overwritten
    assert [c.pages for c in again[0].chapters] == [99, 99]
    assert again[1].genres == []
    assert again[2].title == "new"
    assert not session.sync_session.dirty


class OtherBase(DeclarativeBase):
    pass


class PlainAuthor(OtherBase):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    books: Mapped[list[CitextBook]] = relationship(order_by="CitextBook.id", lazy="raise")


class CitextBook(OtherBase):
    """A column type of a PostgreSQL extension (declared so; the column is varchar):
    the driver could not decode it inside a record, so the books stay a level of
    their own."""

    __tablename__ = "books"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    title: Mapped[str] = mapped_column(CITEXT)


class PlainAuthors(Repository[PlainAuthor]):
    model = PlainAuthor
    load = ("books",)


async def test_a_type_not_known_built_in_keeps_its_level(
    db: Database, session: AsyncSession
) -> None:
    author_id, book_ids = await seed(session)
    with count_queries(db) as queries, direct_statements(db) as direct:
        author = await PlainAuthors(session).get(author_id)
    assert queries.count == 2  # the author, then its books with = ANY
    assert direct == queries.statements
    assert [book.id for book in author.books] == book_ids
    assert author.books[0].title.endswith("-0")


SCHEMA = "repository_nested"


class GaugeBase(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class Panel(GaugeBase):
    __tablename__ = "panels"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    gauges: Mapped[list[Gauge]] = relationship(lazy="raise", order_by="Gauge.id")


class Gauge(GaugeBase):
    __tablename__ = "gauges"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    panel_id: Mapped[int] = mapped_column(ForeignKey("panels.id"))
    v: Mapped[Any] = mapped_column(Integer)


class Panels(Repository[Panel]):
    model = Panel
    load = ("gauges",)


@pytest.fixture
async def named(migrated_url: str) -> AsyncIterator[Database]:
    """Opt-in named statements: the nested statement is prepared once per connection."""
    async with Database(migrated_url, pool_size=3, named_statements=True) as database:
        yield database


async def test_live_schema_changes_never_return_wrong_values(db: Database) -> None:
    """A nested record's fields decode by the types the record carries now: after a
    column changes type under live pooled connections, reads return the new values;
    after it is dropped, a clear DatabaseError."""
    await _schema_changes(db)


async def test_live_schema_changes_with_named_statements(named: Database) -> None:
    """The same with each connection's nested statement prepared once and kept: the
    server replans it after the change (its result type, an array of records, is
    unchanged), and the records carry the new types."""
    await _schema_changes(named)


async def _schema_changes(db: Database) -> None:
    async with db.engine.begin() as connection:
        await connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        await connection.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        await connection.run_sync(GaugeBase.metadata.create_all)
        await connection.execute(text(f"INSERT INTO {SCHEMA}.panels VALUES (1)"))
        await connection.execute(text(f"INSERT INTO {SCHEMA}.gauges VALUES (1, 1, 42)"))
    try:
        for change, expected in [
            (None, 42),
            ("ALTER COLUMN v TYPE real USING v + 0.5", 42.5),
            ("ADD COLUMN w integer DEFAULT 7", 42.5),
            ("ALTER COLUMN v TYPE text", "42.5"),
        ]:
            if change is not None:
                async with db.engine.begin() as connection:
                    await connection.execute(text(f"ALTER TABLE {SCHEMA}.gauges {change}"))
            for _ in range(6):  # several pooled connections, each already used before
                async with db.unit_of_work() as uow:
                    with count_queries(db) as queries:
                        panel = await Panels(uow.session).get(1)
                    assert queries.count == 1
                    assert [(g.id, g.v) for g in panel.gauges] == [(1, expected)]
        async with db.engine.begin() as connection:
            await connection.execute(text(f"ALTER TABLE {SCHEMA}.gauges DROP COLUMN v"))
        async with db.unit_of_work() as uow:
            with pytest.raises(DatabaseError) as raised:
                await Panels(uow.session).get(1)
        assert raised.value.sqlstate == "42703"  # undefined column
    finally:
        async with db.engine.begin() as connection:
            await connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
