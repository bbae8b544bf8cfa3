"""Keyset pagination properties, with hypothesis, against PostgreSQL.

Each example seeds its rows inside a transaction of its own and rolls it
back, so examples never see each other's rows.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession
from tests.library.models import Author, Book
from tests.library.repositories import BookRepository

from harbordb import Database
from harbordb.errors import InvalidCursor

EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Uniform directions (row comparison) and mixed ones (OR expansion); few distinct
# values per column, so most rows tie on the sort keys and the id decides.
ORDERINGS: list[tuple[str, ...]] = [
    (),
    ("price_cents",),
    ("-price_cents",),
    ("title", "price_cents"),
    ("-title", "-copies"),
    ("title", "-price_cents"),
    ("-price_cents", "title", "copies"),
    ("-created_at",),
]

ROWS = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from("abc"), st.integers(0, 2)),
    max_size=40,
)


@asynccontextmanager
async def rolled_back(database: Database) -> AsyncIterator[AsyncSession]:
    async with database.engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield AsyncSession(bind=connection, expire_on_commit=False)
        finally:
            await transaction.rollback()


async def seed(session: AsyncSession, rows: list[tuple[int, str, int]]) -> int:
    author = Author(email="property@example.com", name="property")
    author.books = [
        Book(isbn=f"p-{i}", title=title, price_cents=price, copies=copies)
        for i, (price, title, copies) in enumerate(rows)
    ]
    session.add(author)
    await session.flush()
    session.expunge_all()
    return author.id


def expected_order(books: list[Book], ordering: tuple[str, ...]) -> list[int]:
    """The order computed in Python: the keys, then the id in the last key's direction.

    Titles are single lowercase letters, which every collation orders alike.
    """
    keys = [(name.lstrip("-"), name.startswith("-")) for name in ordering]
    keys.append(("id", keys[-1][1] if keys else False))
    ordered = list(books)
    for attribute, descending in reversed(keys):  # stable sorts, least significant first
        ordered.sort(key=lambda b: getattr(b, attribute), reverse=descending)
    return [b.id for b in ordered]


@EXAMPLES
@given(rows=ROWS, limit=st.integers(1, 12), ordering=st.sampled_from(ORDERINGS))
async def test_walking_all_pages_yields_every_row_once_in_order(
    database: Database, rows: list[tuple[int, str, int]], limit: int, ordering: tuple[str, ...]
) -> None:
    async with rolled_back(database) as session:
        author_id = await seed(session, rows)
        books = BookRepository(session)
        mine = Book.author_id == author_id
        everything = await books.list(mine, load=())
        seen: list[int] = []
        cursor = None
        pages = 0
        while True:
            page = await books.page(mine, after=cursor, limit=limit, order_by=ordering, load=())
            pages += 1
            seen += [b.id for b in page.items]
            assert len(page.items) <= limit
            if not page.has_more:
                assert page.next_cursor is None
                break
            assert len(page.items) == limit
            cursor = page.next_cursor
        assert seen == expected_order(everything, ordering)
        assert len(set(seen)) == len(rows)
        assert pages == max(1, -(-len(rows) // limit))  # no empty trailing page


@EXAMPLES
@given(data=st.data())
async def test_tampered_cursors_raise_invalid_cursor(
    database: Database, data: st.DataObject
) -> None:
    async with rolled_back(database) as session:
        author_id = await seed(session, [(i % 2, "a", 0) for i in range(6)])
        books = BookRepository(session)
        mine = Book.author_id == author_id
        first = await books.page(mine, limit=2, order_by=("price_cents",))
        assert first.next_cursor is not None
        raw = bytearray(base64.urlsafe_b64decode(first.next_cursor + "=="))
        tampering = data.draw(st.sampled_from(["flip", "truncate", "append", "garbage"]))
        cursor: Any
        if tampering == "flip":
            # Positions are drawn independently of the cursor, whose length varies with ids.
            position = data.draw(st.integers(0, 10**6)) % len(raw)
            raw[position] ^= data.draw(st.integers(1, 255))
            cursor = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
        elif tampering == "truncate":
            cursor = first.next_cursor[: data.draw(st.integers(0, 10**6)) % len(first.next_cursor)]
        elif tampering == "append":
            cursor = first.next_cursor + data.draw(st.text(min_size=1, max_size=8))
        else:
            cursor = data.draw(st.text(max_size=300) | st.binary(max_size=300))
        with pytest.raises(InvalidCursor):
            await books.page(mine, after=cursor, limit=2, order_by=("price_cents",))
        # Refused before reaching the database: the transaction is still usable.
        second = await books.page(mine, after=first.next_cursor, limit=2, order_by=("price_cents",))
        assert len(second.items) == 2
