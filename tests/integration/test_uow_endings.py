"""Readable after the block: what a unit of work's objects hold once it has ended.

Every ending (commit, an exception, read-only, leaving without commit, and a
unit of work joined to an outer connection) keeps the loaded attributes of a
unit of work that wrote nothing, while what was not loaded raises at once;
the end then costs no expire pass. A unit of work that wrote and did not
commit expires everything it loaded, so nothing uncommitted looks committed.
Directly and through PgBouncer (the `db` fixture).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, insert, inspect, select, text, update
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session, defer, object_session
from sqlalchemy.orm import session as orm_session
from sqlalchemy.orm.exc import DetachedInstanceError
from sqlalchemy.orm.identity import IdentityMap
from tests.library.models import Author, Base, Book, Genre
from tests.library.repositories import LibraryWork
from tests.library.seed import delete_seeded, seed_books

from harbordb import Database
from harbordb.detaching import IDENTITY_MAP_KILL, INTERNALS
from harbordb.errors import DatabaseError
from harbordb.testing.plugin import rolled_back_connection

SEED_PREFIX = "endings"  # these tests commit: `author_id` deletes what is seeded under it

UNLOADED = (DetachedInstanceError, InvalidRequestError)  # lazy="raise" or detached: at once


class Boom(Exception):
    pass


@pytest.fixture
async def author_id(database: Database[LibraryWork]) -> AsyncIterator[int]:
    """A committed author with two books (3 and 5 copies), deleted after the test."""
    books = await seed_books(database, SEED_PREFIX, [3, 5])
    yield books[0].author_id
    await delete_seeded(database, SEED_PREFIX)


@contextmanager
def expire_events() -> Iterator[list[object]]:
    """One entry per object of any Harbor model that the ORM expires meanwhile."""
    expired: list[object] = []

    def on_expire(target: Any, attrs: Any) -> None:
        expired.append(attrs)

    event.listen(Base, "expire", on_expire, propagate=True)
    try:
        yield expired
    finally:
        event.remove(Base, "expire", on_expire)


@contextmanager
def detach_events() -> Iterator[list[object]]:
    """One entry per object any session detaches one by one (expunge, close) meanwhile."""
    detached: list[object] = []

    def on_detach(session: Session, instance: object) -> None:
        detached.append(instance)

    event.listen(Session, "persistent_to_detached", on_detach)
    try:
        yield detached
    finally:
        event.remove(Session, "persistent_to_detached", on_detach)


def assert_readable(author: Author, author_id: int) -> None:
    """What the read loaded is there; what it did not load raises at once."""
    assert author.id == author_id
    assert author.name == SEED_PREFIX
    assert sorted(book.copies for book in author.books) == [3, 5]
    assert all(book.isbn.startswith(f"{SEED_PREFIX}-") for book in author.books)
    with pytest.raises(UNLOADED):
        _ = author.books[0].chapters  # not in the load plan
    with pytest.raises(UNLOADED):
        _ = author.books[0].genres


def assert_expired(author: Author) -> None:
    """Nothing of the object can be read any more: it cannot pass for committed."""
    with pytest.raises(DetachedInstanceError):
        _ = author.name


async def read(uow: LibraryWork, author_id: int) -> Author:
    return await uow.authors.get(author_id, load=("books",))


# -- a unit of work that wrote nothing: readable after every ending ---------------


async def test_readable_after_commit(db: Database[LibraryWork], author_id: int) -> None:
    async with db.unit_of_work() as uow:
        author = await read(uow, author_id)
        await uow.commit()
    assert_readable(author, author_id)


async def test_readable_after_an_exception_rolls_back(
    db: Database[LibraryWork], author_id: int
) -> None:
    loaded: list[Author] = []

    async def fail_after_reading() -> None:
        async with db.unit_of_work() as uow:
            loaded.append(await read(uow, author_id))
            raise Boom

    with expire_events() as expired, pytest.raises(Boom):
        await fail_after_reading()
    assert_readable(loaded[0], author_id)
    assert expired == []


async def test_readable_after_a_read_only_unit_of_work(
    db: Database[LibraryWork], author_id: int
) -> None:
    with expire_events() as expired:
        async with db.unit_of_work(read_only=True) as uow:
            author = await read(uow, author_id)
    assert_readable(author, author_id)
    assert expired == []


async def test_readable_after_leaving_without_commit(
    db: Database[LibraryWork], author_id: int
) -> None:
    with expire_events() as expired:
        async with db.unit_of_work() as uow:
            author = await read(uow, author_id)
            locked = await uow.authors.get(author_id, load=(), for_update=True)  # a read
    assert_readable(author, author_id)
    assert locked is author
    assert expired == []


async def test_readable_after_run_and_after_a_page(
    db: Database[LibraryWork], author_id: int
) -> None:
    author = await db.run(lambda uow: read(uow, author_id))
    assert_readable(author, author_id)
    async with db.unit_of_work(read_only=True) as uow:
        page = await uow.authors.page(Author.id == author_id)
    (item,) = page.items
    assert [book.chapters for book in item.books] == [[], []]  # AuthorRepository's plan


async def test_a_write_counts_as_an_expire_pass_and_a_read_does_not(
    db: Database[LibraryWork], author_id: int
) -> None:
    """The contrast that shows the listener sees what it should: the same objects
    are expired by the end of a unit of work that wrote."""
    with expire_events() as expired:
        async with db.unit_of_work() as uow:
            author = await read(uow, author_id)
            await uow.genres.add(Genre(name=f"{SEED_PREFIX}-{uuid.uuid4()}"))
    assert len(expired) >= 3  # the author and the two books
    assert_expired(author)


# -- no per-object work at the end ---------------------------------------------------


@pytest.mark.parametrize("ending", ["read only", "leave", "commit"])
async def test_objects_are_detached_at_once_when_nothing_was_written(
    db: Database[LibraryWork], author_id: int, ending: str
) -> None:
    """The end visits no object (none passes `persistent_to_detached` or is expired), yet
    every one is detached: readable, unloaded parts raise, free to join another session."""
    with detach_events() as detached, expire_events() as expired:
        async with db.unit_of_work(read_only=ending == "read only") as uow:
            author = await read(uow, author_id)
            if ending == "commit":
                await uow.commit()
    assert (detached, expired) == ([], [])
    assert_readable(author, author_id)
    for loaded in (author, *author.books):
        assert inspect(loaded).detached
        assert object_session(loaded) is None
    async with db.unit_of_work() as uow:
        uow.session.add(author)  # never "already attached to session ..."
        assert author in uow.session
        assert await uow.authors.get(author_id) is author


async def test_a_column_not_loaded_raises_after_the_block(
    db: Database[LibraryWork], author_id: int
) -> None:
    async with db.unit_of_work(read_only=True) as uow:
        statement = select(Author).where(Author.id == author_id).options(defer(Author.name))
        author = (await uow.session.scalars(statement)).one()
    assert author.id == author_id
    with pytest.raises(DetachedInstanceError):
        _ = author.name  # would need a query: the session is gone


async def test_a_unit_of_work_that_wrote_detaches_one_by_one(
    db: Database[LibraryWork], author_id: int
) -> None:
    """The contrast: the listener above does see the objects of an ending that expires."""
    with detach_events() as detached:
        async with db.unit_of_work() as uow:
            author = await read(uow, author_id)
            books = list(author.books)
            await uow.genres.add(Genre(name=f"{SEED_PREFIX}-{uuid.uuid4()}"))
    assert {id(author), *map(id, books)} <= set(map(id, detached))


def test_the_sqlalchemy_internals_detaching_reads_are_there() -> None:
    """`harbordb.detaching` reads these (SQLAlchemy pinned below 2.2): fail loudly if gone."""
    for name in INTERNALS:
        assert hasattr(orm_session, name), f"sqlalchemy.orm.session.{name} is gone"
    assert callable(getattr(IdentityMap, IDENTITY_MAP_KILL, None))
    session = Session()
    assert orm_session._sessions[session.hash_key] is session
    assert isinstance(orm_session._new_sessionid(), int)


# -- joined to an outer connection (how tests run units of work) --------------------


@pytest.fixture
async def outer(db: Database[LibraryWork]) -> AsyncIterator[AsyncConnection]:
    async with rolled_back_connection(db) as connection:
        yield connection


async def _setting(connection: AsyncConnection, name: str) -> str:
    """A setting, read with a SELECT (textual SQL would count as a possible write)."""
    return str((await connection.execute(select(func.current_setting(name)))).scalar_one())


async def test_joined_readable_and_its_savepoint_rolled_back(
    db: Database[LibraryWork], outer: AsyncConnection, author_id: int
) -> None:
    before = await _setting(outer, "statement_timeout")
    with expire_events() as expired:
        async with db.unit_of_work(connection=outer, statement_timeout=4.5) as uow:
            author = await read(uow, author_id)
            assert await _setting(await uow.session.connection(), "statement_timeout") == "4500ms"
    assert_readable(author, author_id)
    assert expired == []
    # Released, the savepoint would have kept its SET LOCAL; rolled back, it is gone.
    assert await _setting(outer, "statement_timeout") == before
    assert outer.in_transaction()
    assert not outer.in_nested_transaction()


async def test_joined_read_only_ends_with_its_savepoint(
    db: Database[LibraryWork], outer: AsyncConnection, author_id: int
) -> None:
    """Joined to an open transaction, READ ONLY cannot go with BEGIN: it is set in the
    savepoint, refuses writes there, and is gone with it."""
    inside: list[str] = []

    async def write_in_a_read_only_block() -> None:
        async with db.unit_of_work(connection=outer, read_only=True) as uow:
            inside.append(await _setting(await uow.session.connection(), "transaction_read_only"))
            await uow.session.execute(insert(Genre).values(name=f"{SEED_PREFIX}-refused"))

    with pytest.raises(DatabaseError) as caught:
        await write_in_a_read_only_block()
    assert inside == ["on"]
    assert caught.value.sqlstate == "25006"  # read_only_sql_transaction
    assert await _setting(outer, "transaction_read_only") == "off"
    assert outer.in_transaction()


async def test_joined_write_is_rolled_back_and_expired(
    db: Database[LibraryWork], outer: AsyncConnection, author_id: int
) -> None:
    async with db.unit_of_work(connection=outer) as uow:
        author = await read(uow, author_id)
        await uow.authors.update(author_id, name="renamed, never committed")
        assert author.name == "renamed, never committed"
    assert_expired(author)
    name = (await outer.execute(select(Author.name).where(Author.id == author_id))).scalar()
    assert name == SEED_PREFIX


# -- a unit of work that wrote and did not commit: nothing looks committed -----------

RENAMED = "renamed, never committed"


async def _flush(uow: LibraryWork, author: Author, author_id: int) -> None:
    author.name = RENAMED
    await uow.flush()


async def _orm_update(uow: LibraryWork, author: Author, author_id: int) -> None:
    await uow.authors.update(author_id, name=RENAMED)  # UPDATE ... RETURNING, refreshed


async def _orm_update_where(uow: LibraryWork, author: Author, author_id: int) -> None:
    await uow.authors.update_where(Author.id == author_id, values={"name": RENAMED})


async def _core_update(uow: LibraryWork, author: Author, author_id: int) -> None:
    table = Author.__table__
    await uow.session.execute(update(table).where(table.c.id == author_id).values(name=RENAMED))


async def _textual(uow: LibraryWork, author: Author, author_id: int) -> None:
    await uow.session.execute(
        text("UPDATE authors SET name = :name WHERE id = :id"), {"name": RENAMED, "id": author_id}
    )


async def _cte_in_a_select(uow: LibraryWork, author: Author, author_id: int) -> None:
    table = Author.__table__
    renamed = (
        update(table)
        .where(table.c.id == author_id)
        .values(name=RENAMED)
        .returning(table.c.id)
        .cte("renamed")
    )
    await uow.session.execute(select(func.count()).select_from(renamed))


async def _on_the_connection(uow: LibraryWork, author: Author, author_id: int) -> None:
    table = Author.__table__
    connection = await uow.session.connection()
    await connection.execute(update(table).where(table.c.id == author_id).values(name=RENAMED))


async def _unflushed(uow: LibraryWork, author: Author, author_id: int) -> None:
    author.name = RENAMED  # never sent: still not committed


async def _copy(uow: LibraryWork, author: Author, author_id: int) -> None:
    await uow.books.copy(
        [(author_id, f"{SEED_PREFIX}-{uuid.uuid4().hex}", "copied", 100, 1)],
        columns=("author_id", "isbn", "title", "price_cents", "copies"),
    )


WRITES: dict[str, Callable[[LibraryWork, Author, int], Awaitable[None]]] = {
    "flush": _flush,
    "orm update returning": _orm_update,
    "orm update_where": _orm_update_where,
    "core update": _core_update,
    "textual sql": _textual,
    "data-modifying cte": _cte_in_a_select,
    "session.connection()": _on_the_connection,
    "unflushed change": _unflushed,
    "copy": _copy,
}


@pytest.mark.parametrize("ending", ["leave", "exception"])
@pytest.mark.parametrize("write", list(WRITES))
async def test_a_write_not_committed_is_not_readable_as_if_committed(
    db: Database[LibraryWork], author_id: int, write: str, ending: str
) -> None:
    with pytest.raises(Boom) if ending == "exception" else _nothing():
        async with db.unit_of_work() as uow:
            author = await read(uow, author_id)
            await WRITES[write](uow, author, author_id)
            if write != "unflushed change":  # a read would flush it
                # Read after the write: the session now shows what the statement changed.
                again = await uow.authors.list(Author.id == author_id, load=("books",))
                assert again == [author]
            if ending == "exception":
                raise Boom
    assert_expired(author)
    for book in author.__dict__.get("books", []):
        with pytest.raises(DetachedInstanceError):
            _ = book.isbn
    async with db.unit_of_work(read_only=True) as uow:
        committed = await read(uow, author_id)
        name, books = committed.name, len(committed.books)
    assert name != RENAMED
    assert books == 2


@contextmanager
def _nothing() -> Iterator[None]:
    yield


async def test_reads_through_other_repositories_stay_readable(
    db: Database[LibraryWork], author_id: int
) -> None:
    async with db.unit_of_work() as uow:
        books = await uow.books.list(Book.author_id == author_id)  # each with its author
        titles = await uow.catalog.list(Book.author_id == author_id, load=("genres",))
    assert sorted(book.copies for book in books) == [3, 5]
    assert {book.author.name for book in books} == {SEED_PREFIX}
    assert [book.genres for book in titles] == [[], []]


async def test_textual_sql_counts_as_a_write_except_in_a_read_only_block(
    db: Database[LibraryWork], author_id: int
) -> None:
    """`text()` may write, so it counts, unless the transaction is READ ONLY."""
    async with db.unit_of_work(read_only=True) as uow:
        author = await read(uow, author_id)
        await uow.session.execute(text("SELECT 1"))
    assert_readable(author, author_id)
    async with db.unit_of_work() as uow:
        author = await read(uow, author_id)
        await uow.session.execute(text("SELECT 1"))
    assert_expired(author)


async def test_a_change_never_flushed_in_a_read_only_block_is_expired(
    db: Database[LibraryWork], author_id: int
) -> None:
    async with db.unit_of_work(read_only=True) as uow:
        author = await read(uow, author_id)
        author.name = RENAMED
    assert_expired(author)
