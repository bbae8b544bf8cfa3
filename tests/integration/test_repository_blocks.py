"""The public building blocks of pages, used the way a service uses them for its own schema.

A small film catalogue of this test's own (its own `DeclarativeBase`, in a
scratch schema created inside the test's rolled-back transaction) gets a
repository whose methods build keyset pages over their own query, a
read-model page from Core rows, and a numbered page, with nothing but
public names of `harbordb.repository`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import ForeignKey, String, any_, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.types import BigInteger

from harbordb import Database, InvalidCursor, Page, count_queries
from harbordb.pagination import Total
from harbordb.repository import Repository, RowBuilder, keyset_query, windowed

SCHEMA = "harbordb_blocks_test"


class Base(DeclarativeBase):
    pass


class Film(Base):
    __tablename__ = "films"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012 - SQLAlchemy's own convention

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    year: Mapped[int]
    reviews: Mapped[list[Review]] = relationship(back_populates="film", lazy="raise")


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012 - SQLAlchemy's own convention

    id: Mapped[int] = mapped_column(primary_key=True)
    film_id: Mapped[int] = mapped_column(ForeignKey(Film.id))
    stars: Mapped[int]
    film: Mapped[Film] = relationship(back_populates="reviews", lazy="raise")


@dataclass(frozen=True, slots=True)
class FilmCard:
    """A read model: a film with its review stars, not an ORM object."""

    id: int
    year: int
    title: str
    stars: tuple[int, ...]


_films = Film.__table__
_reviews = Review.__table__
_STARS = (
    select(_reviews.c.film_id, _reviews.c.stars)
    .where(_reviews.c.film_id == any_(bindparam("keys", type_=ARRAY(BigInteger))))
    .order_by(_reviews.c.id)
)


def film_cards(session: Session, rows: Sequence[Row[Any]]) -> list[FilmCard]:
    """The `RowBuilder`: one more statement for all the rows' reviews, none for no rows."""
    if not rows:
        return []
    stars: dict[int, list[int]] = {row.id: [] for row in rows}
    for film_id, value in session.connection().execute(_STARS, {"keys": list(stars)}):
        stars[film_id].append(value)
    return [FilmCard(row.id, row.year, row.title, tuple(stars[row.id])) for row in rows]


_build: RowBuilder = film_cards  # the builder fits the public type


class FilmRepository(Repository[Film]):
    model = Film
    load = ("reviews",)
    order_by = ("-year", "title")

    @staticmethod
    def _since(since: int | None) -> list[Any]:
        return [] if since is None else [Film.year >= bindparam("since")]

    async def releases(
        self, *, since: int | None = None, after: str | None = None, limit: int = 10
    ) -> Page[Film]:
        """Films from `since` on, newest first, with their reviews: a keyset page."""
        keys = self.sort_keys()
        filters = self._since(since)
        query = keyset_query(self.select_loaded(), filters, keys, resume=after is not None)
        params = {} if since is None else {"since": since}
        return await self.keyset_page(
            query, keys, after=after, limit=limit, conditions=filters, params=params
        )

    async def cards(
        self,
        *,
        since: int | None = None,
        after: str | None = None,
        limit: int = 10,
        total: Total = None,
    ) -> Page[FilmCard]:
        """`releases` as read-model cards built from Core rows; the same cursors."""
        keys = self.sort_keys()
        filters = self._since(since)
        rows = select(_films.c.id, _films.c.year, _films.c.title)
        query = keyset_query(rows, filters, keys, resume=after is not None)
        params = {} if since is None else {"since": since}
        return await self.keyset_page(
            query,
            keys,
            after=after,
            limit=limit,
            total=total,
            conditions=filters,
            params=params,
            build=film_cards,
        )

    async def numbered(self, page: int, *, limit: int = 10) -> tuple[list[FilmCard], bool, int]:
        """A numbered page of cards by title, with an exact count."""
        rows = select(_films.c.id, _films.c.year, _films.c.title)
        query = windowed(rows, self.order_clauses(("title",))).offset((page - 1) * limit)
        items, has_more = await self.fetch_window(query, limit, build=film_cards)
        total = await self.page_total("exact", [])
        assert total is not None
        return list(items), has_more, total


@pytest.fixture
async def films(session: AsyncSession) -> FilmRepository:
    """A scratch schema with 23 films (years with ties, 0-2 reviews each), in the
    test's transaction: rolled back with it."""
    await session.execute(text(f"CREATE SCHEMA {SCHEMA}"))
    await session.run_sync(lambda sync: Base.metadata.create_all(sync.connection()))
    session.add_all(
        Film(
            title=f"film {i:02d}",
            year=2000 + i % 5,
            reviews=[Review(stars=(i + j) % 5 + 1) for j in range(i % 3)],
        )
        for i in range(23)
    )
    await session.flush()
    session.expunge_all()
    return FilmRepository(session)


async def expected_order(films: FilmRepository, since: int | None = None) -> list[int]:
    filters = [] if since is None else [Film.year >= since]
    return [film.id for film in await films.list(*filters, load=())]


async def test_a_keyset_page_over_the_services_own_query(
    db: Database, films: FilmRepository
) -> None:
    expected = await expected_order(films, since=2002)
    seen: list[int] = []
    cursor = None
    for _ in range(10):  # bounded: a cursor that did not advance would loop
        with count_queries(db) as queries:
            page = await films.releases(since=2002, after=cursor, limit=4)
        assert queries.count == 2, queries.report()  # films, their reviews
        assert all(isinstance(review.stars, int) for f in page.items for review in f.reviews)
        seen += [film.id for film in page.items]
        assert page.has_more == (page.next_cursor is not None)
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert seen == expected
    assert len(expected) == 13  # years 2002-2004 of 2000-2004


async def test_a_read_model_page_built_from_core_rows(db: Database, films: FilmRepository) -> None:
    expected = await expected_order(films)
    stars = {f.id: tuple(r.stars for r in f.reviews) for f in await films.list()}
    seen: list[FilmCard] = []
    cursor = None
    for _ in range(10):
        with count_queries(db) as queries:
            page = await films.cards(after=cursor, limit=5, total="exact")
        assert queries.count == 3, queries.report()  # films, reviews, the COUNT
        assert page.total == 23
        seen += page.items
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [card.id for card in seen] == expected
    assert all(isinstance(card, FilmCard) and card.stars == stars[card.id] for card in seen)


async def test_cursors_pass_between_the_orm_page_and_the_read_model_page(
    films: FilmRepository,
) -> None:
    first = await films.releases(limit=6)
    assert first.next_cursor is not None
    cards = await films.cards(after=first.next_cursor, limit=6)
    orm = await films.releases(after=first.next_cursor, limit=6)
    assert [c.id for c in cards.items] == [f.id for f in orm.items]
    assert cards.next_cursor == orm.next_cursor
    by_page = await films.page(after=first.next_cursor, limit=6)  # the built-in page too
    assert [f.id for f in by_page.items] == [f.id for f in orm.items]


async def test_a_cursor_of_another_ordering_is_refused(films: FilmRepository) -> None:
    by_title = await films.page(limit=3, order_by=("title",))
    assert by_title.next_cursor is not None
    with pytest.raises(InvalidCursor):
        await films.cards(after=by_title.next_cursor)


async def test_keyset_page_refuses_a_query_that_does_not_match(films: FilmRepository) -> None:
    keys = films.sort_keys()
    first = await films.releases(limit=3)
    fresh = keyset_query(films.select_loaded(), [], keys, resume=False)
    with pytest.raises(TypeError, match="keyset_query"):  # would silently restart
        await films.keyset_page(fresh, keys, after=first.next_cursor, limit=3, conditions=[])
    plain = windowed(films.select_loaded(), [key.ordering for key in keys])
    with pytest.raises(TypeError, match="keyset_query"):
        await films.keyset_page(plain, keys, after=None, limit=3, conditions=[])
    with pytest.raises(TypeError, match="same keys"):
        await films.keyset_page(fresh, keys[:1], after=None, limit=3, conditions=[])


async def test_a_numbered_read_model_page(db: Database, films: FilmRepository) -> None:
    titles = [f"film {i:02d}" for i in range(23)]
    with count_queries(db) as queries:
        items, has_more, total = await films.numbered(3, limit=10)
    assert queries.count == 3, queries.report()  # films, reviews, COUNT
    assert [card.title for card in items] == titles[20:]
    assert has_more is False
    assert total == 23
    items, has_more, _ = await films.numbered(2, limit=10)
    assert [card.title for card in items] == titles[10:20]
    assert has_more is True
