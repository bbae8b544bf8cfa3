"""The statement counter and the per-parent relationship load record."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import lazyload, selectinload
from tests.library.models import Author, Book

from harbordb import Database, assert_max_queries, count_queries


async def seed(session: AsyncSession, authors: int) -> None:
    session.add_all(
        Author(
            email=f"qc{i}@example.com",
            name=f"a{i}",
            books=[Book(isbn=f"qc-{i}-{j}", title=f"b{j}", price_cents=1) for j in range(2)],
        )
        for i in range(authors)
    )
    await session.flush()
    session.expunge_all()


async def test_forced_lazy_loads_are_counted_per_parent(
    database: Database, db_session: AsyncSession
) -> None:
    await seed(db_session, 10)
    with count_queries(database) as queries:
        query = select(Author).where(Author.email.like("qc%"))
        authors = (await db_session.scalars(query.options(lazyload(Author.books)))).all()
        for author in authors:
            await author.awaitable_attrs.books
    assert queries.count == 11
    assert queries.loads_by_attribute() == {"Author.books": 10}
    location = queries.relationship_loads[0].location
    assert location.startswith(__file__), location  # the line that awaited, not SQLAlchemy's


async def test_load_plans_are_not_per_parent_loads(
    database: Database, db_session: AsyncSession
) -> None:
    await seed(db_session, 10)
    with count_queries(database) as queries:
        query = select(Author).where(Author.email.like("qc%"))
        authors = (await db_session.scalars(query.options(selectinload(Author.books)))).all()
    assert sum(len(a.books) for a in authors) == 20
    assert queries.count == 2
    assert queries.relationship_loads == []


async def test_assert_max_queries_lists_the_statements(
    database: Database, db_session: AsyncSession
) -> None:
    await db_session.execute(select(1))  # opens the test's savepoint outside the count

    async def two_statements() -> None:
        with assert_max_queries(database, 1):
            await db_session.execute(select(1))
            await db_session.execute(select(Author.id).limit(1))

    with pytest.raises(AssertionError, match=r"at most 1 statement\(s\), got 2 stat") as caught:
        await two_statements()
    assert "FROM authors" in str(caught.value)
    with assert_max_queries(database, 1) as queries:
        await db_session.execute(select(1))
    assert queries.count == 1


async def test_counter_ignores_other_engines(database: Database, db_session: AsyncSession) -> None:
    other = Database(str(database.engine.url.render_as_string(False)))
    try:
        with count_queries(other) as queries:
            await db_session.execute(select(1))
        assert queries.count == 0
    finally:
        await other.dispose()


async def _load_books_in_a_helper(authors: list[Author]) -> None:
    for author in authors:
        await author.awaitable_attrs.books  # the line the report must name


async def test_location_is_the_innermost_awaiting_line(
    database: Database, db_session: AsyncSession
) -> None:
    await seed(db_session, 2)
    query = select(Author).where(Author.email.like("qc%")).options(lazyload(Author.books))
    authors = list((await db_session.scalars(query)).all())
    with count_queries(database) as queries:
        await _load_books_in_a_helper(authors)
    expected_line = _load_books_in_a_helper.__code__.co_firstlineno + 2
    assert {load.location for load in queries.relationship_loads} == {f"{__file__}:{expected_line}"}
