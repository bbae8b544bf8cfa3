"""`harbordb.projection` on a small library schema of this module's own (not Harbor's),
directly and through PgBouncer.

The schema lives in its own PostgreSQL schema, created for the module and
dropped after it, so Harbor's tables and the other tests are untouched.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from benchmarks.counting import count_round_trips
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    text,
)
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from harbordb import Database, Repository, assert_max_queries, count_queries
from harbordb.driver import (
    ADAPTER_MEMBERS,
    SESSION_TRANSACTION_MEMBER,
    held,
)
from harbordb.errors import ConfigurationError, DatabaseError, InvalidCursor, Timeout, Unavailable
from harbordb.projection import Projection, reads, related

SCHEMA = "projection_library"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class Shelf(enum.Enum):
    NEW = "new"
    OLD = "old"


author_genres = Table(
    "author_genres",
    Base.metadata,
    Column("author_id", ForeignKey("authors.id"), primary_key=True),
    Column("genre_id", ForeignKey("genres.id"), primary_key=True),
)


class Publisher(Base):
    __tablename__ = "publishers"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Genre(Base):
    __tablename__ = "genres"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    mentor_id: Mapped[int | None] = mapped_column(ForeignKey("authors.id"))
    books: Mapped[list[Book]] = relationship(
        lazy="raise", order_by="Book.title", back_populates="author"
    )
    genres: Mapped[list[Genre]] = relationship(secondary=author_genres, lazy="raise")
    mentor: Mapped[Author | None] = relationship(lazy="raise", remote_side=[id])
    recent_books: Mapped[list[Book]] = relationship(
        lazy="raise",
        viewonly=True,
        primaryjoin="and_(Author.id == Book.author_id, Book.shelf == 'new')",
    )


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    publisher_id: Mapped[int | None] = mapped_column(ForeignKey("publishers.id"))
    title: Mapped[str] = mapped_column(String(200))
    shelf: Mapped[Shelf] = mapped_column(
        Enum(Shelf, name="shelf", values_callable=lambda e: [m.value for m in e])
    )
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    publisher: Mapped[Publisher | None] = relationship(lazy="raise")
    author: Mapped[Author] = relationship(lazy="raise", back_populates="books")


class Edition(Base):
    """A composite key: `Edition.printings` joins on two column pairs."""

    __tablename__ = "editions"
    book_id: Mapped[int] = mapped_column(ForeignKey("books.id"), primary_key=True)
    number: Mapped[int] = mapped_column(primary_key=True)
    printings: Mapped[list[Printing]] = relationship(lazy="raise")


class Printing(Base):
    __tablename__ = "printings"
    __table_args__ = (
        ForeignKeyConstraint(["book_id", "edition"], ["editions.book_id", "editions.number"]),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    book_id: Mapped[int] = mapped_column(BigInteger)
    edition: Mapped[int] = mapped_column()
    copies: Mapped[int] = mapped_column()


try:  # the `fast` extra, part of `dev`
    import msgspec
except ImportError:  # pragma: no cover
    msgspec = None

if msgspec is not None:

    class PublisherStruct(msgspec.Struct, frozen=True):
        id: int
        name: str

    class BookStruct(msgspec.Struct, frozen=True):
        id: int
        title: str
        shelf: Shelf
        published_at: datetime
        publisher: PublisherStruct | None

    class NickStruct(msgspec.Struct):
        nickname: str


class AuthorRepository(Repository[Author]):
    model = Author


@dataclass(frozen=True, slots=True)
class PublisherRef:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class BookLine:
    id: int
    title: str
    shelf: Shelf
    published_at: datetime
    publisher: PublisherRef | None


@dataclass(frozen=True, slots=True)
class BookRow:
    """Columns of many-to-one parents, flattened into the row."""

    id: int
    title: str
    author_name: str
    mentor_name: str | None
    publisher_name: str | None


BOOK_ROWS = Projection(
    BookRow,
    Book,
    author_name="author.name",
    mentor_name="author.mentor.name",
    publisher_name="publisher.name",
)


@dataclass(frozen=True, slots=True)
class MentorRef:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class AuthorCard:
    id: int
    name: str
    books: tuple[BookLine, ...]
    genres: tuple[str, ...]
    mentor: MentorRef | None
    shouted: str


CARDS = Projection(
    AuthorCard,
    Author,
    books=Projection(BookLine, Book, publisher=Projection(PublisherRef, Publisher)),
    genres=related(Author.genres, Genre.name, order_by=("-name",)),
    mentor=Projection(MentorRef, Author),
    shouted=lambda author: func.upper(author.name),
)

WHEN = datetime.fromisoformat("2026-01-02T03:04:05+00:00")
ROWS = [
    "INSERT INTO {s}.publishers VALUES (1, 'Harbor Press')",
    "INSERT INTO {s}.genres VALUES (1, 'poetry'), (2, 'essays'), (3, 'drama')",
    "INSERT INTO {s}.authors VALUES (1, 'Ann', NULL), (2, 'Bob', 1), (3, 'Cy', 1), (4, 'Bo', NULL)",
    "INSERT INTO {s}.author_genres VALUES (1, 1), (1, 2), (2, 3)",
    "INSERT INTO {s}.books VALUES "
    "(10, 1, 1, 'Tides', 'new', '2026-01-02T03:04:05+00'), "
    "(11, 1, NULL, 'Anchors', 'old', '2026-01-02T03:04:05+00'), "
    "(12, 2, 1, 'Gulls', 'old', '2026-01-02T03:04:05+00')",
    "INSERT INTO {s}.editions VALUES (10, 1), (10, 2)",
    "INSERT INTO {s}.printings VALUES (1, 10, 1, 500), (2, 10, 1, 300), (3, 10, 2, 100)",
]


@pytest.fixture(scope="module")
async def _library(database: Database) -> AsyncIterator[None]:
    async with database.engine.begin() as connection:
        await connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        await connection.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        await connection.run_sync(Base.metadata.create_all)
        for row in ROWS:
            await connection.execute(text(row.format(s=SCHEMA)))
    yield
    async with database.engine.begin() as connection:
        await connection.execute(text(f"DROP SCHEMA {SCHEMA} CASCADE"))


pytestmark = pytest.mark.usefixtures("_library")


def ann() -> AuthorCard:
    harbor = PublisherRef(1, "Harbor Press")
    return AuthorCard(
        1,
        "Ann",
        (
            BookLine(11, "Anchors", Shelf.OLD, WHEN, None),
            BookLine(10, "Tides", Shelf.NEW, WHEN, harbor),
        ),
        ("poetry", "essays"),
        None,
        "ANN",
    )


async def test_get_builds_the_whole_tree_in_one_statement(db: Database) -> None:
    async with db.unit_of_work() as uow:
        with assert_max_queries(db, 1) as queries:
            card = await CARDS.get(uow, 1)
        assert card == ann()
        assert queries.count == 1
        assert "array_agg" in queries.statements[0]
        bob = await CARDS.get(uow, 2)
        assert bob is not None
        assert bob.mentor == MentorRef(1, "Ann")
        assert bob.genres == ("drama",)
        assert bob.books[0].publisher == PublisherRef(1, "Harbor Press")
        assert isinstance(bob.books[0].shelf, Shelf)
        bo = await CARDS.get(uow, 4)
        assert bo == AuthorCard(4, "Bo", (), (), None, "BO")
        assert await CARDS.get(uow, 99) is None


async def test_path_fields_join_many_to_one_parents(db: Database) -> None:
    async with db.unit_of_work() as uow:
        with count_queries(db) as queries:
            rows = await BOOK_ROWS.all(uow, order_by=("title",))
        assert queries.count == 1
    assert rows == [
        BookRow(11, "Anchors", "Ann", None, None),
        BookRow(12, "Gulls", "Bob", "Ann", "Harbor Press"),
        BookRow(10, "Tides", "Ann", None, "Harbor Press"),
    ]

    @dataclass(frozen=True, slots=True)
    class WithRows:
        id: int
        books: tuple[BookRow, ...]

    nested = Projection(
        WithRows,
        Author,
        books=Projection(
            BookRow,
            Book,
            **{
                "author_name": "author.name",
                "mentor_name": "author.mentor.name",
                "publisher_name": "publisher.name",
            },
        ),
    )
    async with db.unit_of_work() as uow:
        bob = await nested.get(uow, 2)
    assert bob == WithRows(2, (BookRow(12, "Gulls", "Bob", "Ann", "Harbor Press"),))


async def test_per_level_reads_equal_the_nested_ones(db: Database) -> None:
    """`per_level=True`: the root, then one `= ANY` statement per relationship (here
    books, their publishers, genres, mentors: five in all), the same objects."""
    async with db.unit_of_work() as uow:
        nested = await CARDS.all(uow, order_by=("name",))
        with count_queries(db) as queries:
            levels = await CARDS.all(uow, order_by=("name",), per_level=True)
        assert levels == nested
        assert queries.count == 5, queries.report()
        assert all("= ANY" in sql for sql in queries.statements[1:])
        assert await CARDS.get(uow, 2, per_level=True) == await CARDS.get(uow, 2)
        assert await CARDS.get(uow, 99, per_level=True) is None
        first = await CARDS.page(uow, limit=2, order_by=("name",), per_level=True)
        rest = await CARDS.page(
            uow, limit=5, after=first.next_cursor, order_by=("name",), per_level=True
        )
        assert [c.name for c in first.items + rest.items] == [c.name for c in nested]
        assert await BOOK_ROWS.all(uow, order_by=("title",), per_level=True) == (
            await BOOK_ROWS.all(uow, order_by=("title",))
        )


@dataclass(frozen=True, slots=True)
class TitleRow:
    title: str
    author_id: int  # the key its level links on: read once, not selected again


@dataclass(frozen=True, slots=True)
class AuthorAfter:
    """Column fields after relationship fields: their positions in the row are not
    their positions among the fields."""

    books: tuple[TitleRow, ...]
    genres: tuple[str, ...]
    name: str
    id: int


async def test_per_level_statements_select_each_column_once(db: Database) -> None:
    """Per level, a key a declared field already carries (the root's id, the books'
    author_id) is not selected again, and relationship fields select nothing of their
    own; sort keys and cursors still find their columns, wherever the fields put them."""
    after = Projection(
        AuthorAfter,
        Author,
        books=Projection(TitleRow, Book),
        genres=related(Author.genres, Genre.name),
    )
    async with db.unit_of_work() as uow:
        nested = await after.all(uow, order_by=("-name",))
        with count_queries(db) as queries:
            levels = await after.all(uow, order_by=("-name",), per_level=True)
        assert levels == nested
        assert nested[0] == AuthorAfter((), (), "Cy", 3)
        assert [a.books for a in nested if a.name == "Ann"] == [
            (TitleRow("Anchors", 1), TitleRow("Tides", 1))
        ]
        root, books, _ = queries.statements
        assert "NULL" not in root, root  # no placeholders for relationship fields
        assert "__" not in root, root  # the key all three levels link on: once (as id)
        assert "__" not in books, books  # author_id once
        walked: list[AuthorAfter] = []
        cursor = None
        while True:
            page = await after.page(uow, after=cursor, limit=3, order_by=("-name",), per_level=True)
            walked += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        assert walked == nested


async def test_the_shape_is_chosen_per_read(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """By default `all` nests until it is expected to return `WIDE` root rows or more
    (from its limit, or from what the same read returned last time), then goes per
    level: the same objects either way. `get` and `page` nest; an explicit
    `per_level` wins."""
    monkeypatch.setattr(reads, "WIDE", 3)
    cards = CARDS.where()  # a record of past reads of its own
    async with db.unit_of_work() as uow:
        expected = await CARDS.all(uow, order_by=("name",), per_level=False)
        assert len(expected) == 4

        async def statements(read: Any) -> tuple[Any, int]:
            with count_queries(db) as queries:
                found = await read
            return found, queries.count

        assert await statements(cards.all(uow, order_by=("name",))) == (expected, 1)  # first
        assert await statements(cards.all(uow, order_by=("name",))) == (expected, 5)  # 4 last
        assert await statements(cards.all(uow, order_by=("name",), limit=2)) == (expected[:2], 1)
        assert await statements(cards.all(uow, order_by=("-name",), limit=3)) == (
            expected[::-1][:3],
            5,  # a limit of 3
        )
        page, count = await statements(cards.page(uow, limit=3, order_by=("name",)))
        assert (page.items, count) == (tuple(expected[:3]), 1)  # pages nest
        assert await statements(cards.get(uow, 1)) == (expected[0], 1)
        assert await statements(cards.all(uow, order_by=("name",), per_level=False)) == (
            expected,
            1,
        )
        rows = BOOK_ROWS.where()  # no relationships: one statement whatever the width
        await rows.all(uow)
        assert (await statements(rows.all(uow)))[1] == 1


@dataclass(frozen=True, slots=True)
class PrintingRow:
    id: int
    copies: int


@dataclass(frozen=True, slots=True)
class EditionRow:
    number: int
    printings: tuple[PrintingRow, ...]


async def test_relationships_the_per_level_shape_cannot_follow_nest(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relationship on two column pairs: per_level=True is refused, the automatic
    shape nests even when the read is wide."""
    monkeypatch.setattr(reads, "WIDE", 1)
    editions = Projection(EditionRow, Edition, printings=Projection(PrintingRow, Printing))
    expected = [
        EditionRow(1, (PrintingRow(1, 500), PrintingRow(2, 300))),
        EditionRow(2, (PrintingRow(3, 100),)),
    ]
    async with db.unit_of_work() as uow:
        with pytest.raises(ConfigurationError, match="one column pair"):
            await editions.all(uow, order_by=("number",), per_level=True)
        for _ in range(2):
            with count_queries(db) as queries:
                assert await editions.all(uow, order_by=("number",)) == expected
            assert queries.count == 1


seen_titles: list[str] = []


@dataclass(frozen=True, slots=True)
class CheckedBook:
    """A `__post_init__`: not built through a twin class, so it runs for every row."""

    id: int
    title: str

    def __post_init__(self) -> None:
        seen_titles.append(self.title)


@dataclass(frozen=True, slots=True)
class AuthorBooks:
    id: int
    books: tuple[CheckedBook, ...]


async def test_classes_with_their_own_construction_are_called(db: Database) -> None:
    """Nested and per level, a class with a `__post_init__` is called for each row read;
    slotted frozen dataclasses around it are built fast and equal their constructor's."""
    shelf = Projection(AuthorBooks, Author, books=Projection(CheckedBook, Book))
    async with db.unit_of_work() as uow:
        for per_level in (False, True):
            seen_titles.clear()
            found = await shelf.get(uow, 1, per_level=per_level)
            assert seen_titles == ["Anchors", "Tides"]
            assert type(found) is AuthorBooks
            assert found == AuthorBooks(1, (CheckedBook(11, "Anchors"), CheckedBook(10, "Tides")))


async def test_msgspec_structs_are_projections_too(db: Database) -> None:
    if msgspec is None:
        pytest.skip("msgspec is not installed (the `fast` extra, part of `dev`)")
    with pytest.raises(ConfigurationError, match="no column"):
        Projection(NickStruct, Author)
    books = Projection(BookStruct, Book, publisher=Projection(PublisherStruct, Publisher))
    async with db.unit_of_work() as uow:
        for per_level in (False, True):
            found = await books.all(uow, order_by=("title",), per_level=per_level)
            assert found == [
                BookStruct(11, "Anchors", Shelf.OLD, WHEN, None),
                BookStruct(12, "Gulls", Shelf.OLD, WHEN, PublisherStruct(1, "Harbor Press")),
                BookStruct(10, "Tides", Shelf.NEW, WHEN, PublisherStruct(1, "Harbor Press")),
            ]


async def test_the_statement_counter_sees_projection_reads(db: Database) -> None:
    async with db.unit_of_work() as uow:
        with count_queries(db) as queries:
            await CARDS.get(uow, 1)
            await CARDS.page(uow, limit=2)
        assert queries.count == 2
        with pytest.raises(AssertionError, match="expected at most 0"), assert_max_queries(db, 0):
            await CARDS.get(uow, 1)


async def test_keyset_pages_walk_every_row_once(db: Database) -> None:
    seen: list[str] = []
    after = None
    async with db.unit_of_work() as uow:
        for _ in range(5):
            with count_queries(db) as queries:
                page = await CARDS.page(uow, after=after, limit=3, order_by=("-name",))
            assert queries.count == 1
            seen += [card.name for card in page.items]
            after = page.next_cursor
            if after is None:
                assert not page.has_more
                break
            assert page.has_more
    assert seen == ["Cy", "Bob", "Bo", "Ann"]


async def test_cursors_are_the_repositorys(db: Database) -> None:
    async with db.unit_of_work() as uow:
        repository = uow.repository(AuthorRepository)
        first = await repository.page(limit=2, order_by=("name",))
        assert [a.name for a in first.items] == ["Ann", "Bo"]
        rest = await CARDS.page(uow, after=first.next_cursor, limit=5, order_by=("name",))
        assert [card.name for card in rest.items] == ["Bob", "Cy"]
        with pytest.raises(InvalidCursor):
            await CARDS.page(uow, after=first.next_cursor, limit=5, order_by=("-name",))
        with pytest.raises(InvalidCursor):
            await CARDS.page(uow, after="garbage", limit=5)


async def test_where_and_params(db: Database) -> None:
    mentored = CARDS.where(lambda a: a.mentor_id == bindparam("mentor"))
    named = CARDS.where(lambda a: a.name.like("B%"))
    async with db.unit_of_work() as uow:
        found = await mentored.all(uow, order_by=("name",), params={"mentor": 1})
        assert [card.name for card in found] == ["Bob", "Cy"]
        assert [c.name for c in await named.all(uow, order_by=("-name",), limit=1)] == ["Bob"]
        assert await named.get(uow, 1) is None  # Ann does not match the filter
        with pytest.raises(TypeError, match="mentor"):
            await mentored.all(uow)


async def test_reads_run_in_the_unit_of_works_transaction(db: Database) -> None:
    """The adapter begins its transaction lazily; a projection read must begin it,
    or it would run outside the unit of work (here: its snapshot and its txid)."""

    @dataclass(frozen=True)
    class Stamp:
        id: int
        txid: int

    stamps = Projection(Stamp, Author, txid=lambda a: func.txid_current())
    async with db.unit_of_work(isolation_level="REPEATABLE READ") as uow:
        stamp = await stamps.get(uow, 1)
        assert stamp is not None
        assert stamp.txid == await uow.session.scalar(text("SELECT txid_current()"))
        level = await uow.session.scalar(text("SHOW transaction_isolation"))
        assert level == "repeatable read"


async def test_read_committed_reads_skip_begin_and_see_the_transactions_writes(
    db: Database,
) -> None:
    """At READ COMMITTED with nothing begun, a read is one statement without BEGIN
    (two round trips, counted on the wire); once the unit of work has begun (here by
    a write), reads run inside it and see its uncommitted rows."""
    async with db.unit_of_work() as uow:
        # Warm: on a connection's first read of an array of records, asyncpg looks the
        # array type up (once per connection; every unit of work through PgBouncer).
        await CARDS.get(uow, 1)
        with count_round_trips() as trips:
            assert await CARDS.get(uow, 4) is not None
        assert trips[0] == 2
        driver = (await (await uow.session.connection()).get_raw_connection()).driver_connection
        assert driver is not None
        assert not driver.is_in_transaction()
        uow.session.add(Genre(id=99, name="unpublished"))
        await uow.session.execute(author_genres.insert().values(author_id=4, genre_id=99))
        with count_round_trips() as trips:
            bo = await CARDS.get(uow, 4)
        assert trips[0] == 2  # inside the transaction: no BEGIN
        assert bo is not None
        assert bo.genres == ("unpublished",)
    async with db.unit_of_work() as uow:  # rolled back
        bo = await CARDS.get(uow, 4)
        assert bo is not None
        assert bo.genres == ()
    async with db.unit_of_work(isolation_level="REPEATABLE READ") as uow:
        await uow.session.execute(text("SELECT 1"))  # begins, and warms the connection
        await CARDS.get(uow, 1)
        with count_round_trips() as trips:
            await CARDS.get(uow, 4)
        assert trips[0] == 2
    async with db.unit_of_work(isolation_level="REPEATABLE READ") as uow:
        with count_round_trips() as trips:
            await CARDS.get(uow, 4)
        assert trips[0] >= 3  # BEGIN ISOLATION LEVEL REPEATABLE READ, then the read


async def test_unit_of_work_settings_apply(db: Database) -> None:
    @dataclass(frozen=True)
    class Slow:
        id: int
        slept: Any

    slow = Projection(Slow, Author, slept=lambda a: func.pg_sleep(0.5))
    async with db.unit_of_work(statement_timeout=0.05) as uow:
        with pytest.raises(Timeout):
            await slow.get(uow, 1)


async def test_a_connection_lost_under_a_read_is_unavailable_and_discarded(
    one_connection_db: Database, database: Database
) -> None:
    """A projection read on a connection the server ended raises `Unavailable` (never the
    driver's own error), and the pool's only connection is replaced, not handed out again."""

    async def read_after_the_server_ended_the_connection() -> None:
        async with one_connection_db.unit_of_work() as uow:
            pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with database.engine.connect() as admin:
                terminate = text("SELECT pg_terminate_backend(:pid, 5000)")
                assert (await admin.execute(terminate, {"pid": pid})).scalar_one()
            await CARDS.get(uow, 1)

    with pytest.raises(Unavailable):
        await read_after_the_server_ended_the_connection()
    async with one_connection_db.unit_of_work() as uow:
        assert await CARDS.get(uow, 1) == ann()


async def test_adapter_members_used_are_still_there() -> None:
    """`harbordb.driver` relies on three non-public members of SQLAlchemy's
    asyncpg adapter: if SQLAlchemy renames them, this fails before any read goes wrong."""
    for member in ADAPTER_MEMBERS:
        assert hasattr(AsyncAdapt_asyncpg_connection, member) or member in (
            AsyncAdapt_asyncpg_connection.__slots__  # type: ignore[attr-defined]
        ), member
    assert inspect.iscoroutinefunction(AsyncAdapt_asyncpg_connection._start_transaction)


@dataclass(frozen=True, slots=True)
class Backend:
    """What the server says about the transaction a read ran in."""

    id: int
    read_only: str
    isolation: str


BACKEND = Projection(
    Backend,
    Author,
    read_only=lambda author: func.current_setting("transaction_read_only"),
    isolation=lambda author: func.current_setting("transaction_isolation"),
)


async def test_plain_units_of_work_read_on_their_own_connection(db: Database) -> None:
    """A unit of work with nothing to set reads on the connection it checked out, without
    opening its session; the session, taken later, is on that same connection. READ
    ONLY and an isolation level still apply: those reads open the session first."""
    async with db.unit_of_work() as uow:
        before = await BACKEND.get(uow, 1)
        assert uow._session is None  # no session opened to find the connection
        assert before is not None
        own = (await held(uow)).driver
        session_connection = (await uow.session.connection()).sync_connection
        assert session_connection.connection.driver_connection is own  # one client connection
        assert await BACKEND.get(uow, 1) == before
    async with db.unit_of_work(read_only=True) as uow:
        found = await BACKEND.get(uow, 1)
        assert found is not None
        assert found.read_only == "on"
    async with db.unit_of_work(isolation_level="REPEATABLE READ") as uow:
        found = await BACKEND.get(uow, 1)
        assert found is not None
        assert found.isolation == "repeatable read"


async def test_traced_units_of_work_keep_their_span(db: Database) -> None:
    """With statement observers, a projection read opens the session, whose transaction
    carries the unit of work's span: the read's statement is its child."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from harbordb.observability import instrument

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentation = instrument(db, metrics=False, tracer_provider=provider)
    try:
        async with db.unit_of_work() as uow:
            assert await CARDS.get(uow, 1) == ann()
    finally:
        instrumentation.remove()
    spans = exporter.get_finished_spans()
    (work,) = [span for span in spans if span.name == "harbordb.unit_of_work"]
    assert work.context is not None
    reads = [span for span in spans if span.name == "SELECT"]
    assert reads
    assert all(span.parent is not None for span in reads)
    assert {span.parent.span_id for span in reads if span.parent} == {work.context.span_id}


async def test_the_unit_of_works_bare_connection_is_the_one_it_checked_out(db: Database) -> None:
    """`harbordb.driver.own_connection` asks the unit of work for its bare connection:
    the one it checked out, until its session opens; none once it has."""
    async with db.unit_of_work() as uow:
        bare = uow._bare_connection()
        assert bare is not None
        assert (await held(uow)).connection is bare
        session_connection = (await uow.session.connection()).sync_connection
        assert session_connection is bare
        assert uow._bare_connection() is None
    assert uow._bare_connection() is None


async def test_the_unit_of_works_connection_is_found_without_asking_sqlalchemy(
    db: Database,
) -> None:
    """`driver.held` reads `SessionTransaction._connections` (non-public) to skip a
    greenlet switch: it must name the very connection the session holds."""
    async with db.unit_of_work() as uow:
        session_connection = (await uow.session.connection()).sync_connection
        transaction = uow.session.sync_session.get_transaction()
        assert transaction is not None
        entries = getattr(transaction, SESSION_TRANSACTION_MEMBER)
        assert {id(entry[0]) for entry in entries.values()} == {id(session_connection)}
        assert (await held(uow)).connection is session_connection


async def test_a_connection_asked_of_sqlalchemy_is_remembered_with_its_transaction(
    db: Database,
) -> None:
    """A session that has not begun: `driver.held` asks SQLAlchemy, which begins the
    transaction; what it remembers names that transaction, so later reads skip the ask."""
    async with db.sessionmaker() as session:
        found = await held(session)
        assert found.transaction is not None
        assert found.transaction is session.sync_session.get_transaction()
        assert await held(session) is found


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Projection(AuthorCard, Author), "relationship"),
        (lambda: Projection(MentorRef, Author, nickname=Author.name), "no field"),
        (lambda: Projection(BookLine, Author), "no column"),
        (lambda: Projection(MentorRef, Author, name=Book.title), "not a column"),
        (lambda: Projection(AuthorCard, Author, books=Projection(MentorRef, Author)), "leads to"),
        (
            lambda: Projection(MentorRef, Author, name=related(Author.recent_books, Book.title)),
            "custom join",
        ),
        (lambda: Projection(dict, Author), "not a dataclass"),
        (lambda: Projection(MentorRef, Author, name="books.title"), "not a many-to-one"),
        (lambda: Projection(MentorRef, Author, name="mentor.nickname"), "no column"),
        (lambda: Projection(MentorRef, object), "not a mapped model"),
    ],
)
def test_declarations_are_checked(build: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()


async def test_live_schema_changes_never_return_wrong_values(db: Database) -> None:
    """Each read prepares its (unnamed) statement afresh, so the row description is
    current: after a column changes type under live pooled connections, reads return
    the new values correctly; after the column is dropped, a clear DatabaseError."""

    class GaugeBase(DeclarativeBase):
        metadata = MetaData(schema=SCHEMA)

    class Gauge(GaugeBase):
        __tablename__ = "gauges"
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        v: Mapped[float] = mapped_column()

    @dataclass(frozen=True)
    class Reading:
        id: int
        v: Any

    readings = Projection(Reading, Gauge)
    table = f"{SCHEMA}.gauges"
    async with db.engine.begin() as connection:
        await connection.execute(text(f"CREATE TABLE {table} (id bigint PRIMARY KEY, v integer)"))
        await connection.execute(text(f"INSERT INTO {table} VALUES (1, 42)"))
    try:
        for change, expected in [
            (None, 42),
            ("ALTER COLUMN v TYPE real USING v + 0.5", 42.5),
            ("ADD COLUMN w integer DEFAULT 7", 42.5),
            ("ALTER COLUMN v TYPE text", "42.5"),
        ]:
            if change is not None:
                async with db.engine.begin() as connection:
                    await connection.execute(text(f"ALTER TABLE {table} {change}"))
            for _ in range(6):  # several pooled connections, each already used before
                async with db.unit_of_work() as uow:
                    assert await readings.get(uow, 1) == Reading(1, expected)
        async with db.engine.begin() as connection:
            await connection.execute(text(f"ALTER TABLE {table} DROP COLUMN v"))
        async with db.unit_of_work() as uow:
            with pytest.raises(DatabaseError) as raised:
                await readings.get(uow, 1)
        assert raised.value.sqlstate == "42703"  # undefined column
    finally:
        async with db.engine.begin() as connection:
            await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
