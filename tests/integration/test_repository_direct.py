"""Plans run on the driver, ORM objects built from its rows (`harbordb.repository.direct`).

What must hold against SQLAlchemy's own loading: every statement counted (a
`get` or a page whose collections all qualify is one statement, its collections
nested: `harbordb.repository.nested`), one identity map with objects loaded
any other way, change tracking and flush, expired attributes filled in,
result processors applied, and a fallback to SQLAlchemy for levels it cannot
build or where load events listen; directly and through PgBouncer (the `db` fixture).
"""

from __future__ import annotations

import gc
import uuid
from inspect import signature
from typing import Any

import sqlalchemy.util
from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Numeric,
    String,
    bindparam,
    delete,
    event,
    inspect,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
)
from sqlalchemy.orm.collections import CollectionAdapter
from tests.integration.observing import direct_statements
from tests.library.models import Author, Book, BookStatus, Chapter
from tests.library.repositories import AuthorRepository, CatalogRepository

from harbordb import Database, count_queries
from harbordb.repository import Repository, keyset_query
from harbordb.repository.base import mapper_of
from harbordb.repository.direct import SQLALCHEMY_MEMBERS


async def seed(session: AsyncSession, books: int = 2) -> tuple[int, list[int]]:
    """One author with `books` books of 2 chapters each."""
    prefix = uuid.uuid4().hex[:8]
    author = Author(email=f"{prefix}@example.com", name="Ada")
    rows = [
        Book(
            author=author,
            title=f"{prefix}-{i}",
            isbn=f"{prefix}-{i}",
            price_cents=100,
            chapters=[Chapter(number=j + 1, title=f"c{j}", pages=10) for j in range(2)],
        )
        for i in range(books)
    ]
    session.add_all(rows)
    await session.flush()
    ids = (author.id, [book.id for book in rows])
    session.expunge_all()
    return ids


class ChapterBooks(Repository[Chapter]):
    """A composite primary key, and a many-to-one joined into the root statement."""

    model = Chapter
    load = ("book",)


def test_the_sqlalchemy_members_relied_on_exist() -> None:
    """Fails loudly when a SQLAlchemy upgrade removes what `direct` uses."""
    session = Session()
    owners = {
        "IdentityMap": session.identity_map,
        "InstanceState": inspect(Chapter()),
        "Mapper": mapper_of(Chapter),
        "ClassManager": mapper_of(Chapter).class_manager,
        "Session": session,
        "CollectionAttributeImpl": mapper_of(Book).class_manager["chapters"].impl,
    }
    for owner, members in SQLALCHEMY_MEMBERS.items():
        for member in members:
            assert hasattr(owners[owner], member), f"SQLAlchemy {owner}.{member} is gone"
    assert callable(sqlalchemy.util.await_)
    assert list(signature(CollectionAdapter.__init__).parameters) == [
        "self",
        "attr",
        "owner_state",
        "data",
    ]
    mapper = mapper_of(Chapter)
    assert mapper.identity_key_from_primary_key((1, 2)) == (mapper._identity_class, (1, 2), None)


async def test_a_plan_runs_on_the_driver_in_one_statement(
    db: Database, session: AsyncSession
) -> None:
    author_id, book_ids = await seed(session)
    with count_queries(db) as queries, direct_statements(db) as direct:
        author = await AuthorRepository(session).get(author_id)
    assert queries.count == 1  # author, books and chapters nested
    assert direct == queries.statements  # on the driver
    assert [book.id for book in author.books] == book_ids
    assert [[c.number for c in book.chapters] for book in author.books] == [[1, 2], [1, 2]]
    assert type(author.books[0].status) is BookStatus  # the Enum's result processor ran
    state = inspect(author.books[0])
    assert state.persistent
    assert state.session is session.sync_session
    assert not session.sync_session.dirty
    with count_queries(db) as queries, direct_statements(db) as direct:
        books = await CatalogRepository(session).list(Book.id.in_(book_ids))
    assert queries.count == 3  # books through SQLAlchemy, chapters and genres direct
    assert len(direct) == 2
    assert books[0].chapters[0] is author.books[0].chapters[0]


async def test_objects_are_registered_as_sqlalchemys_identity_map_does(
    db: Database, session: AsyncSession
) -> None:
    """Registered inline (`IdentityMap._add_unpresent`'s two steps): found by key, tied
    to the map, and gone from it once the program drops them (a weak identity map)."""
    author_id, _ = await seed(session)
    author = await AuthorRepository(session).get(author_id)
    identity_map = session.sync_session.identity_map
    chapter = author.books[0].chapters[0]
    state = inspect(chapter)
    assert identity_map.get(state.key) is chapter
    assert state._instance_dict() is identity_map
    assert identity_map.contains_state(state)
    keys = [inspect(book).key for book in author.books]
    del author, chapter, state
    gc.collect()
    assert all(key not in identity_map for key in keys)
    assert len(identity_map) == 0


async def test_a_missing_row_and_locking_reads(db: Database, session: AsyncSession) -> None:
    author_id, _ = await seed(session)
    with count_queries(db) as queries, direct_statements(db) as direct:
        assert await AuthorRepository(session).get_or_none(-1) is None
    assert queries.count == len(direct) == 1
    with count_queries(db) as queries, direct_statements(db) as direct:
        locked = await AuthorRepository(session).get(author_id, for_update=True)
    assert "FOR UPDATE" in queries.statements[0]  # the locking root stays with SQLAlchemy,
    assert direct == queries.statements[1:]  # its collections (unlocked, as before) do not
    assert len(locked.books) == 2


async def test_objects_loaded_earlier_are_kept_with_their_changes(
    db: Database, session: AsyncSession
) -> None:
    author_id, book_ids = await seed(session)
    book = await session.get(Book, book_ids[0])
    assert book is not None
    book.title = "not flushed"
    session.sync_session.autoflush = False
    try:
        author = await AuthorRepository(session).get(author_id)
    finally:
        session.sync_session.autoflush = True
    assert author.books[0] is book
    assert book.title == "not flushed"
    assert book in session.sync_session.dirty
    assert len(book.chapters) == 2  # its unloaded collection was filled in
    with count_queries(db) as queries:
        assert await session.get(Author, author_id) is author  # from the identity map
        assert await session.get(Chapter, (book_ids[1], 2)) is author.books[1].chapters[1]
    assert queries.count == 0


async def test_changes_to_fast_loaded_objects_flush(db: Database, session: AsyncSession) -> None:
    author_id, book_ids = await seed(session)
    author = await AuthorRepository(session).get(author_id)
    author.name = "Grace"
    author.books[0].status = BookStatus.OUT_OF_PRINT
    author.books[0].chapters.append(Chapter(number=3, title="added", pages=1))
    author.books[1].chapters.remove(author.books[1].chapters[0])
    chapters = ChapterBooks(session)
    with direct_statements(db) as direct:
        chapter = await chapters.get((book_ids[1], 2))
    assert len(direct) == 1
    assert chapter.book is author.books[1]
    chapter.book = author.books[0]
    chapter.number = 4
    await session.flush()
    session.expunge_all()
    again = await AuthorRepository(session).get(author_id)
    assert again.name == "Grace"
    assert again.books[0].status is BookStatus.OUT_OF_PRINT
    assert [[c.number for c in book.chapters] for book in again.books] == [[1, 2, 3, 4], []]


async def test_expired_attributes_are_read_again(db: Database, session: AsyncSession) -> None:
    author_id, _ = await seed(session)
    authors = AuthorRepository(session)
    author = await authors.get(author_id)
    await session.execute(update(Author).where(Author.id == author_id).values(name="Renamed"))
    session.expire(author, ["name"])
    again = await authors.get(author_id)
    assert again is author
    assert author.name == "Renamed"
    assert not session.sync_session.dirty


async def test_populate_existing_overwrites_on_the_driver(
    db: Database, session: AsyncSession
) -> None:
    author_id, book_ids = await seed(session, books=1)
    authors = AuthorRepository(session)
    author = await authors.get(author_id)
    await session.execute(update(Chapter).where(Chapter.book_id == book_ids[0]).values(pages=99))
    stmt = authors.select_loaded().where(Author.id == author_id)
    with direct_statements(db) as direct:
        await session.scalars(stmt.execution_options(populate_existing=True))
    assert len(direct) == 2  # books and chapters
    assert [c.pages for c in author.books[0].chapters] == [99, 99]
    assert not session.sync_session.dirty


# -- levels and reads that stay with SQLAlchemy --------------------------------------


class OtherBase(DeclarativeBase):
    pass


class PricedAuthor(OtherBase):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    books: Mapped[list[PricedBook]] = relationship(order_by="PricedBook.id", lazy="raise")


class PricedBook(OtherBase):
    """`Numeric`'s result processing on asyncpg depends on the server's column type."""

    __tablename__ = "books"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    price_cents: Mapped[Any] = mapped_column(Numeric)


class PricedAuthors(Repository[PricedAuthor]):
    model = PricedAuthor
    load = ("books",)


async def test_a_type_processed_by_server_type_falls_back(
    db: Database, session: AsyncSession
) -> None:
    author_id, _ = await seed(session)
    with count_queries(db) as queries, direct_statements(db) as direct:
        author = await PricedAuthors(session).get(author_id)
    assert queries.count == 2
    assert len(direct) == 1  # the author on the driver, the books through SQLAlchemy
    assert [book.price_cents for book in author.books] == [100, 100]


async def test_load_event_listeners_send_the_read_through_sqlalchemy(
    db: Database, session: AsyncSession
) -> None:
    author_id, _ = await seed(session)
    loaded: list[Any] = []

    def on_load(target: Any, context: Any) -> None:
        loaded.append(target)

    event.listen(Chapter, "load", on_load)
    try:
        with count_queries(db) as queries, direct_statements(db) as direct:
            author = await AuthorRepository(session).get(author_id)
    finally:
        event.remove(Chapter, "load", on_load)
    assert queries.count == 3
    assert len(direct) == 2
    assert sorted(id(c) for b in author.books for c in b.chapters) == sorted(map(id, loaded))


async def test_a_unit_of_work_reads_changes_and_commits(db: Database) -> None:
    async with db.unit_of_work() as uow:
        author_id, _ = await seed(uow.session)
        await uow.commit()
    try:
        async with db.unit_of_work() as uow:
            with direct_statements(db) as direct:
                author = await AuthorRepository(uow.session).get(author_id)
            assert len(direct) == 1
            author.books[0].title = "committed"
            await uow.commit()
        async with db.unit_of_work(read_only=True) as uow:
            again = await AuthorRepository(uow.session).get(author_id)
            assert again.books[0].title == "committed"
    finally:
        async with db.unit_of_work() as uow:
            await uow.session.execute(delete(Book).where(Book.author_id == author_id))
            await uow.session.execute(delete(Author).where(Author.id == author_id))
            await uow.commit()


async def test_a_collection_behind_a_joined_many_to_one(
    db: Database, session: AsyncSession
) -> None:
    _, book_ids = await seed(session)

    class ChapterSiblings(Repository[Chapter]):
        model = Chapter
        load = ("book.chapters",)

    with count_queries(db) as queries, direct_statements(db) as direct:
        chapter = await ChapterSiblings(session).get((book_ids[0], 1))
    assert queries.count == len(direct) == 2
    assert [c.number for c in chapter.book.chapters] == [1, 2]
    assert chapter in chapter.book.chapters


async def test_a_page_query_built_once_runs_on_the_driver_from_its_second_use(
    db: Database, session: AsyncSession
) -> None:
    author_id, book_ids = await seed(session, books=3)
    books = CatalogRepository(session)
    keys = books.sort_keys(("isbn",))
    filters = [Book.author_id == bindparam("author")]
    params = {"author": author_id}
    first_page = keyset_query(books.select_loaded(), filters, keys, resume=False)
    first = await books.keyset_page(
        first_page, keys, after=None, limit=2, conditions=filters, params=params
    )
    with count_queries(db) as queries, direct_statements(db) as direct:
        again = await books.keyset_page(
            first_page, keys, after=None, limit=2, conditions=filters, params=params
        )
    assert queries.count == 1  # books, chapters and genres nested
    assert direct == queries.statements
    assert again.items == first.items  # the same objects
    assert again.items[0] is first.items[0]
    assert again.has_more
    assert again.next_cursor == first.next_cursor
    assert [len(book.chapters) for book in again.items] == [2, 2]
    later = keyset_query(books.select_loaded(), filters, keys, resume=True)
    for _ in range(2):
        last = await books.keyset_page(
            later, keys, after=first.next_cursor, limit=2, conditions=filters, params=params
        )
        assert [book.id for book in last.items] == book_ids[2:]
        assert not last.has_more
