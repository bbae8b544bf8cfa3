"""The library's models: what harbordb's generic tests need, and no more.

- `Author` 1-n `Book` (``ON DELETE RESTRICT``: an author with books stays),
- `Book` 1-n `Chapter` (composite primary key, ``ON DELETE CASCADE``),
- `Book` n-m `Genre` (``book_genres``),
- unique and check constraints, an enum, a nullable column, two hybrids,
  string columns to search, server-set timestamps kept right by a trigger.

Every relationship is ``lazy="raise"`` (checked by `require_raise_loading`).
`AsyncAttrs` gives the N+1 detector something to catch: `awaitable_attrs`
under a forced ``lazyload(...)`` loads one parent at a time.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Identity,
    Integer,
    MetaData,
    String,
    Table,
)
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement

from harbordb import NAMING_CONVENTION, Timestamps, require_raise_loading


class Base(AsyncAttrs, DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class BookStatus(enum.StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    OUT_OF_PRINT = "out_of_print"


book_genres = Table(
    "book_genres",
    Base.metadata,
    Column("book_id", BigInteger, ForeignKey("books.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "genre_id",
        BigInteger,
        ForeignKey("genres.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)


class Author(Timestamps, Base):
    __tablename__ = "authors"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))

    books: Mapped[list[Book]] = relationship(
        back_populates="author", lazy="raise", order_by="Book.id"
    )


class Book(Timestamps, Base):
    __tablename__ = "books"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    author_id: Mapped[int] = mapped_column(
        ForeignKey("authors.id", ondelete="RESTRICT"), index=True
    )
    isbn: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200), index=True)
    price_cents: Mapped[int] = mapped_column(Integer)
    copies: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[BookStatus] = mapped_column(
        Enum(BookStatus, name="book_status", values_callable=lambda e: [m.value for m in e]),
        server_default=BookStatus.DRAFT.value,
    )
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    author: Mapped[Author] = relationship(back_populates="books", lazy="raise")
    chapters: Mapped[list[Chapter]] = relationship(
        back_populates="book",
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Chapter.number",
    )
    genres: Mapped[list[Genre]] = relationship(
        secondary=book_genres, back_populates="books", lazy="raise", passive_deletes=True
    )

    __table_args__ = (
        CheckConstraint("price_cents >= 0", name="price_cents_non_negative"),
        CheckConstraint("copies >= 0", name="copies_non_negative"),
    )

    @hybrid_property
    def in_stock(self) -> bool:
        return self.copies > 0

    @in_stock.inplace.expression
    @classmethod
    def _in_stock_expression(cls) -> ColumnElement[bool]:
        return cls.copies > 0

    @hybrid_property
    def is_withdrawn(self) -> bool:
        return self.withdrawn_at is not None

    @is_withdrawn.inplace.expression
    @classmethod
    def _is_withdrawn_expression(cls) -> ColumnElement[bool]:
        return cls.withdrawn_at.is_not(None)


class Chapter(Base):
    __tablename__ = "chapters"

    book_id: Mapped[int] = mapped_column(
        ForeignKey("books.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    pages: Mapped[int] = mapped_column(Integer)

    book: Mapped[Book] = relationship(back_populates="chapters", lazy="raise")

    __table_args__ = (CheckConstraint("pages > 0", name="pages_positive"),)


class Genre(Base):
    __tablename__ = "genres"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)

    books: Mapped[list[Book]] = relationship(
        secondary=book_genres, back_populates="genres", lazy="raise", passive_deletes=True
    )


require_raise_loading(Base)
