"""A service's own models on harbordb's declarative helpers, against the migrated schema:
`lazy="raise"` everywhere, server-set `Timestamps` kept right by a trigger, hybrids,
named constraints and database-side cascades (the models of tests/library)."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, select, text, update
from sqlalchemy.exc import IntegrityError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession
from tests.library.models import Author, Base, Book, Chapter, Genre

ISBN = "978-MODEL-TEST-1"


async def seed_one_of_each(session: AsyncSession) -> None:
    author = Author(email="model-test@example.com", name="Ada")
    book = Book(
        author=author,
        isbn=ISBN,
        title="Notes",
        price_cents=2500,
        copies=3,
        genres=[Genre(name="model-test-essays")],
    )
    book.chapters = [Chapter(number=1, title="One", pages=12)]
    session.add_all([author, book])
    await session.flush()
    session.expunge_all()


async def test_every_relationship_raises_on_lazy_access(db_session: AsyncSession) -> None:
    """Walks the mapper registry: a new relationship without lazy='raise' fails here."""
    await seed_one_of_each(db_session)
    checked = 0
    for mapper in Base.registry.mappers:
        # Any row will do (other tests may have committed some): lazy access raises on each.
        obj = (await db_session.scalars(select(mapper.class_).limit(1))).one()
        for rel in mapper.relationships:
            with pytest.raises(InvalidRequestError, match="lazy='raise'"):
                getattr(obj, rel.key)
            checked += 1
    assert checked == sum(len(m.relationships) for m in Base.registry.mappers) >= 6


async def test_awaitable_attrs_cannot_sneak_a_lazy_load(db_session: AsyncSession) -> None:
    await seed_one_of_each(db_session)
    author = (
        await db_session.scalars(select(Author).where(Author.email == "model-test@example.com"))
    ).one()
    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        await author.awaitable_attrs.books


async def test_server_sets_timestamps_and_trigger_bumps_updated_at(
    db_session: AsyncSession,
) -> None:
    await seed_one_of_each(db_session)
    book = (await db_session.scalars(select(Book).where(Book.isbn == ISBN))).one()
    assert book.created_at.tzinfo is not None
    before = book.updated_at
    # now() is the transaction's start time; move the row's clock back to see the trigger act.
    await db_session.execute(
        text("UPDATE books SET updated_at = updated_at - interval '1 hour' WHERE id = :id"),
        {"id": book.id},
    )
    await db_session.execute(update(Book).where(Book.id == book.id).values(copies=5))
    after = await db_session.scalar(select(Book.updated_at).where(Book.id == book.id))
    assert after == before  # reset to now() by the trigger, not left an hour behind


async def test_hybrid_in_stock_works_in_python_and_sql(db_session: AsyncSession) -> None:
    await seed_one_of_each(db_session)
    book = (await db_session.scalars(select(Book).where(Book.isbn == ISBN))).one()
    assert book.in_stock is True
    mine = Book.isbn == ISBN
    assert (await db_session.scalars(select(Book.isbn).where(mine, Book.in_stock))).all() == [ISBN]
    book.copies = 0
    await db_session.flush()
    assert book.in_stock is False
    assert (await db_session.scalars(select(Book.isbn).where(mine, Book.in_stock))).all() == []


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        ("UPDATE books SET copies = -1 WHERE isbn = '978-MODEL-TEST-1'",
         "ck_books_copies_non_negative"),
        ("UPDATE books SET price_cents = -1 WHERE isbn = '978-MODEL-TEST-1'",
         "ck_books_price_cents_non_negative"),
        ("UPDATE chapters SET pages = 0 WHERE book_id IN "
         "(SELECT id FROM books WHERE isbn = '978-MODEL-TEST-1')",
         "ck_chapters_pages_positive"),
        ("INSERT INTO chapters (book_id, number, title, pages) "
         "SELECT book_id, number, 'again', 1 FROM chapters WHERE book_id IN "
         "(SELECT id FROM books WHERE isbn = '978-MODEL-TEST-1')",
         "pk_chapters"),
        ("INSERT INTO books (author_id, isbn, title, price_cents) "
         "SELECT author_id, isbn, title, 1 FROM books WHERE isbn = '978-MODEL-TEST-1'",
         "uq_books_isbn"),
    ],
)  # fmt: skip
async def test_constraints_are_enforced(
    db_session: AsyncSession, statement: str, constraint: str
) -> None:
    await seed_one_of_each(db_session)
    with pytest.raises(IntegrityError, match=constraint):
        async with db_session.begin_nested():
            await db_session.execute(text(statement))


async def test_deleting_a_book_cascades_in_the_database(db_session: AsyncSession) -> None:
    author = Author(email="model-cascade@example.com", name="Bea")
    book = Book(author=author, isbn="978-MODEL-CASCADE", title="Mug", price_cents=1)
    book.chapters = [Chapter(number=1, title="m", pages=1)]
    db_session.add(book)
    await db_session.flush()
    book_id = book.id
    await db_session.delete(book)  # passive_deletes: no SELECT of the chapters first
    await db_session.flush()
    assert await db_session.scalar(select(Chapter).where(Chapter.book_id == book_id)) is None
    assert inspect(book).deleted
