"""Load plans' collections: one ``= ANY(:keys)`` statement each, tracked objects.

The plan's collections are loaded by `harbordb.repository.loading` instead of
`selectinload`: these tests pin what that must keep from it (statement
counts, identity map, change tracking, loaded collections left alone, raising
outside the plan) on the library's models, directly and through PgBouncer.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from tests.library.models import Author, Book, Chapter, Genre
from tests.library.repositories import AuthorRepository, CatalogRepository

from harbordb import Database, count_queries
from harbordb.repository import Repository
from harbordb.repository.base import mapper_of
from harbordb.repository.plans import compile_plan, needs_raiseload


async def seed(session: AsyncSession, books: int = 3) -> tuple[int, list[int]]:
    """One author with `books` books, each with 2 chapters and the same 2 genres."""
    prefix = uuid.uuid4().hex[:8]
    genres = [Genre(name=f"{prefix}-g{i}") for i in range(2)]
    author = Author(email=f"{prefix}@example.com", name="Ada")
    rows = [
        Book(
            author=author,
            title=f"{prefix}-{i}",
            isbn=f"{prefix}-{i}",
            price_cents=100,
            chapters=[Chapter(number=j + 1, title=f"c{j}", pages=10) for j in range(2)],
            genres=genres,
        )
        for i in range(books)
    ]
    session.add_all(rows)
    await session.flush()
    ids = (author.id, [book.id for book in rows])
    session.expunge_all()
    return ids


class ChapterGenres(Repository[Chapter]):
    """A collection reached through a many-to-one: chapter -> book -> genres."""

    model = Chapter
    load = ("book.genres",)


async def test_collections_load_once_per_level_for_all_parents(
    db: Database, session: AsyncSession
) -> None:
    author_id, book_ids = await seed(session)
    with count_queries(db) as queries:
        author = await AuthorRepository(session).get(author_id)
    assert queries.count == 1  # author, books and chapters nested (harbordb.repository.nested)
    assert [book.id for book in author.books] == book_ids  # relationship order_by: Book.id
    assert all([c.number for c in book.chapters] == [1, 2] for book in author.books)
    with count_queries(db) as queries:
        books = await CatalogRepository(session).list(Book.id.in_(book_ids))
    assert queries.count == 3  # books, chapters, genres (many-to-many): a list is per level
    assert "= ANY" in queries.statements[1]
    assert "= ANY" in queries.statements[2]
    assert books[0].genres[0] is books[1].genres[0]  # one identity map
    assert sorted(g.name for g in books[0].genres) == sorted(g.name for g in books[2].genres)


async def test_a_collection_behind_a_many_to_one_loads_for_the_joined_parents(
    db: Database, session: AsyncSession
) -> None:
    _, book_ids = await seed(session, books=2)
    with count_queries(db) as queries:
        chapters = await ChapterGenres(session).list(Chapter.book_id.in_(book_ids))
    assert queries.count == 2  # chapters joined to books, then genres
    assert len(chapters) == 4
    assert all(len(chapter.book.genres) == 2 for chapter in chapters)
    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        _ = chapters[0].book.chapters


async def test_loaded_objects_are_tracked_and_flushed(db: Database, session: AsyncSession) -> None:
    author_id, _ = await seed(session, books=2)
    author = await AuthorRepository(session).get(author_id)
    author.books[0].chapters.append(Chapter(number=3, title="added", pages=1))
    author.books[1].title = "renamed"
    author.books[1].chapters.remove(author.books[1].chapters[0])
    await session.flush()
    session.expunge_all()
    again = await AuthorRepository(session).get(author_id)
    assert [len(book.chapters) for book in again.books] == [3, 1]
    assert again.books[1].title == "renamed"


async def test_a_loaded_collection_is_left_alone_but_the_statement_still_runs(
    db: Database, session: AsyncSession
) -> None:
    author_id, _ = await seed(session, books=2)
    authors = AuthorRepository(session)
    author = await authors.get(author_id)
    extra = Chapter(number=9, title="pending", pages=1)
    author.books[0].chapters.append(extra)  # a change not flushed yet
    session.sync_session.autoflush = False
    try:
        with count_queries(db) as queries:
            again = await authors.get(author_id)
    finally:
        session.sync_session.autoflush = True
    assert queries.count == 1  # the whole plan, nested
    assert again is author
    assert extra in again.books[0].chapters


async def test_populate_existing_refreshes_loaded_collections(
    db: Database, session: AsyncSession
) -> None:
    author_id, book_ids = await seed(session, books=1)
    authors = AuthorRepository(session)
    author = await authors.get(author_id)
    await session.execute(Chapter.__table__.delete().where(Chapter.book_id == book_ids[0]))
    stmt = authors.select_loaded().where(Author.id == author_id)
    stale = await authors.get(author_id)
    assert len(stale.books[0].chapters) == 2  # left alone
    fresh = (await session.scalars(stmt.execution_options(populate_existing=True))).one()
    assert fresh is author
    assert fresh.books[0].chapters == []


async def test_select_loaded_runs_its_plan_wherever_it_is_executed(
    db: Database, session: AsyncSession
) -> None:
    author_id, _ = await seed(session, books=2)
    stmt = AuthorRepository(session).select_loaded().where(Author.id == author_id)
    with count_queries(db) as queries:
        rows = (await session.execute(stmt)).all()
    assert queries.count == 3
    assert [len(book.chapters) for book in rows[0][0].books] == [2, 2]
    empty = AuthorRepository(session).select_loaded().where(Author.id == -1)
    with count_queries(db) as queries:
        assert (await session.scalars(empty)).all() == []
    assert queries.count == 1  # no parents, no collection statements


# -- raiseload only where a relationship would load on access ---------------------


class OtherBase(DeclarativeBase):
    pass


class LazyAuthor(OtherBase):
    """The library's authors table mapped with relationships that load on access."""

    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    books: Mapped[list[LazyBook]] = relationship(back_populates="author", order_by="LazyBook.id")


class LazyBook(OtherBase):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    title: Mapped[str] = mapped_column(String(200))
    author: Mapped[LazyAuthor] = relationship(back_populates="books")


class LazyAuthors(Repository[LazyAuthor]):
    model = LazyAuthor
    load = ("books",)


class LazyBooks(Repository[LazyBook]):
    model = LazyBook


def test_raiseload_is_added_only_for_models_that_would_load_on_access() -> None:
    assert not needs_raiseload(mapper_of(Author))
    assert needs_raiseload(mapper_of(LazyAuthor))
    assert compile_plan(mapper_of(Author), ("books",), "t").options == ()
    lazy = compile_plan(mapper_of(LazyAuthor), ("books",), "t")
    assert len(lazy.options) == 1  # raiseload("*") on the authors
    assert len(lazy.loads[0].statement._with_options) == 1  # and on the books


async def test_outside_the_plan_a_lazy_relationship_still_raises(
    db: Database, session: AsyncSession
) -> None:
    author_id, book_ids = await seed(session, books=2)
    with count_queries(db) as queries:
        author = await LazyAuthors(session).get(author_id)
    assert queries.count == 2
    assert [book.id for book in author.books] == book_ids
    with pytest.raises(InvalidRequestError, match="not available"):
        _ = author.books[0].author  # would lazy-load: the plan's raiseload stops it
    book = await LazyBooks(session).get(book_ids[0])
    with pytest.raises(InvalidRequestError, match="not available"):
        _ = book.author


async def test_a_streamed_plan_loads_its_collections(db: Database, session: AsyncSession) -> None:
    author_id, _ = await seed(session, books=2)
    stmt = AuthorRepository(session).select_loaded().where(Author.id == author_id)
    with count_queries(db) as queries:
        streamed = await session.stream_scalars(stmt)
        authors = [author async for author in streamed]
    assert queries.count == 3
    assert [len(book.chapters) for book in authors[0].books] == [2, 2]
