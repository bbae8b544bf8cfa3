"""`Repository[ModelT]` against PostgreSQL, directly and through PgBouncer.

Every public method's statement count is asserted. Each test runs in an outer
transaction that is rolled back; the session's savepoint is opened before
counting starts, so counts hold only the repository's own statements. The
models and repositories are the library's (tests/library).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, text, true
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from tests.library.models import Author, Book, Chapter, Genre
from tests.library.repositories import AuthorRepository, BookRepository, CatalogRepository

from harbordb import Database, count_queries
from harbordb.errors import (
    CheckViolation,
    ConfigurationError,
    Conflict,
    ForeignKeyViolation,
    InvalidCursor,
    NotFound,
)
from harbordb.repository import Repository, any_of, contains, escape_like

# -- helpers (the `db` and `session` fixtures are in conftest.py) -----------------


class Chapters(Repository[Chapter]):
    """A composite primary key (book_id, number), with the book joined."""

    model = Chapter
    load = ("book",)


def marker() -> str:
    return uuid.uuid4().hex[:8]


async def seed_author(session: AsyncSession, prefix: str = "") -> int:
    author = Author(email=f"{prefix or marker()}@example.com", name="Ada")
    session.add(author)
    await session.flush()
    return author.id


async def seed_books(
    session: AsyncSession, count: int, *, chapters: int = 2, genres: int = 2, prefix: str = ""
) -> list[int]:
    """`count` books of one author, with chapters and genres; the session is emptied
    afterwards. Book i: title ``{prefix}-{i:04d}``, isbn ``{prefix}-{i}``,
    price 100 * i, ``i % 2`` copies."""
    prefix = prefix or marker()
    genre_rows = [Genre(name=f"{prefix}-genre-{i}") for i in range(genres)]
    author = Author(email=f"{prefix}@example.com", name="Ada")
    books = [
        Book(
            author=author,
            title=f"{prefix}-{i:04d}",
            isbn=f"{prefix}-{i}",
            price_cents=100 * i,
            copies=i % 2,
            chapters=[Chapter(number=j + 1, title=f"c{j}", pages=10) for j in range(chapters)],
            genres=genre_rows,
        )
        for i in range(count)
    ]
    session.add_all(books)
    await session.flush()
    ids = [b.id for b in books]
    session.expunge_all()  # repository reads must load from the database
    return ids


async def seed_authors(
    session: AsyncSession, count: int, *, books: int = 1, chapters: int = 2
) -> list[int]:
    """`count` authors, each with `books` books of `chapters` chapters."""
    prefix = marker()
    authors = [
        Author(
            email=f"{prefix}-{i}@example.com",
            name="Ada",
            books=[
                Book(
                    isbn=f"{prefix}-{i}-{k}",
                    title=f"{prefix}-{i}-{k}",
                    price_cents=100,
                    chapters=[
                        Chapter(number=j + 1, title=f"c{j}", pages=10) for j in range(chapters)
                    ],
                )
                for k in range(books)
            ],
        )
        for i in range(count)
    ]
    session.add_all(authors)
    await session.flush()
    ids = [a.id for a in authors]
    session.expunge_all()
    return ids


# -- class definition -------------------------------------------------------------


def test_a_load_path_naming_no_relationship_fails_at_class_definition() -> None:
    with pytest.raises(ConfigurationError) as caught:

        class BadAuthors(Repository[Author]):
            model = Author
            load = ("books.chaptres.book",)

    message = str(caught.value)
    assert "BadAuthors.load" in message
    assert "'books.chaptres.book'" in message
    assert "Book has no relationship 'chaptres'" in message
    assert "chapters" in message  # lists what exists


def test_a_load_path_through_a_column_fails_at_class_definition() -> None:
    with pytest.raises(ConfigurationError, match=r"Book has no relationship 'title'"):

        class BadBooks(Repository[Book]):
            model = Book
            load = ("title",)


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"order_by": ("-titel",)}, r"BadRepo.order_by: Book has no column 'titel'"),
        ({"upsert_on": ("title",)}, r"no unique constraint on \(title\)"),
        ({"upsert_on": ("isbm",)}, r"Book has no column\(s\) 'isbm'"),
        ({"search_columns": ("price_cents",)}, r"'price_cents' is not a string column"),
        ({"load": ("",)}, r"relationship paths or loader options"),
        ({"model": object}, r"must be a mapped class"),
    ],
)
def test_bad_class_attributes_fail_at_definition(attributes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        type("BadRepo", (Repository,), {"model": Book, **attributes})


def test_an_abstract_repository_has_no_checks_and_cannot_be_used() -> None:
    class Base_(Repository[Any]):
        max_limit = 100

    with pytest.raises(TypeError, match="abstract"):
        Base_(None)  # type: ignore[arg-type]


# -- load plans -------------------------------------------------------------------


async def test_default_plan_loads_nested_paths_in_one_statement(
    db: Database, session: AsyncSession
) -> None:
    (author_id,) = await seed_authors(session, 1, books=2, chapters=3)
    authors = AuthorRepository(session)
    with count_queries(db) as queries:
        author = await authors.get(author_id)
    assert queries.count == 1, queries.report()  # authors, books and chapters nested
    with count_queries(db) as after:
        titles = [chapter.title for book in author.books for chapter in book.chapters]
    assert after.count == 0
    assert len(titles) == 6


async def test_nested_many_to_one_paths_join_into_one_statement(
    db: Database, session: AsyncSession
) -> None:
    (book_id,) = await seed_books(session, 1, chapters=2)

    class ChaptersWithAuthors(Repository[Chapter]):
        model = Chapter
        load = ("book.author",)

    with count_queries(db) as queries:
        chapter = await ChaptersWithAuthors(session).get((book_id, 2))
    assert queries.count == 1, queries.report()
    with count_queries(db) as after:
        assert chapter.book.author.name == "Ada"
    assert after.count == 0


async def test_relationships_outside_the_plan_raise_on_access(session: AsyncSession) -> None:
    (author_id,) = await seed_authors(session, 1)
    author = await AuthorRepository(session).get(author_id)
    book = author.books[0]
    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        _ = book.genres
    chapter = await Chapters(session).get((book.id, 1), load=())
    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        _ = (await Chapters(session).get((book.id, 2))).book.genres
    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        _ = chapter.book


async def test_a_per_call_plan_replaces_the_default(db: Database, session: AsyncSession) -> None:
    (book_id,) = await seed_books(session, 1)
    books = BookRepository(session)
    with count_queries(db) as queries:
        bare = await books.get(book_id, load=())
    assert queries.count == 1
    with pytest.raises(InvalidRequestError):
        _ = bare.author
    session.expunge_all()
    with count_queries(db) as queries:
        book = await books.get(book_id, load=("author", "chapters"))
    assert queries.count == 1  # the author joined, the chapters nested
    assert book.author.name == "Ada"
    assert len(book.chapters) == 2
    with pytest.raises(InvalidRequestError):
        _ = book.genres


async def test_a_per_call_plan_naming_no_relationship_is_refused(session: AsyncSession) -> None:
    with pytest.raises(ConfigurationError, match="Author has no relationship 'novels'"):
        await AuthorRepository(session).get(1, load=("novels",))


async def test_loader_options_can_join_a_plan(db: Database, session: AsyncSession) -> None:
    (book_id,) = await seed_books(session, 1, chapters=3)
    catalog = CatalogRepository(session)
    with count_queries(db) as queries:
        book = await catalog.get(book_id, load=(selectinload(Book.chapters),))
    assert queries.count == 2
    assert len(book.chapters) == 3
    with pytest.raises(InvalidRequestError):
        _ = book.genres


async def test_a_later_read_fills_relationships_of_an_object_already_loaded(
    session: AsyncSession,
) -> None:
    (author_id,) = await seed_authors(session, 1, books=2)
    authors = AuthorRepository(session)
    bare = await authors.get(author_id, load=())
    full = await authors.get(author_id)
    assert full is bare
    assert len(full.books) == 2


# -- reads ------------------------------------------------------------------------


async def test_get_of_a_missing_row_raises_not_found_naming_model_and_id(
    db: Database, session: AsyncSession
) -> None:
    catalog = CatalogRepository(session)
    with count_queries(db) as queries, pytest.raises(NotFound) as caught:
        await catalog.get(987654321)
    assert str(caught.value) == "Book 987654321 not found"
    assert queries.count == 1


async def test_get_or_none(db: Database, session: AsyncSession) -> None:
    (book_id,) = await seed_books(session, 1)
    catalog = CatalogRepository(session)
    with count_queries(db) as queries:
        assert await catalog.get_or_none(987654321) is None
    assert queries.count == 1
    with count_queries(db) as queries:
        found = await catalog.get_or_none(book_id)
    assert queries.count == 1  # books, chapters and genres nested
    assert found is not None
    assert len(found.chapters) == 2


@pytest.mark.parametrize("rows", [5, 500])
async def test_get_many_is_one_any_statement_in_input_order(
    db: Database, session: AsyncSession, rows: int
) -> None:
    ids = await seed_books(session, rows)
    wanted = [*reversed(ids), 987654321, ids[0]]
    catalog = CatalogRepository(session)
    with count_queries(db) as queries:
        found = await catalog.get_many(wanted)
    assert queries.count == 3, queries.report()  # books, chapters, genres: for 5 and for 500
    assert "= ANY" in queries.statements[0]
    assert " IN (" not in queries.statements[0]
    assert [b.id for b in found] == list(reversed(ids))
    assert all(len(b.chapters) == 2 for b in found)
    with count_queries(db) as queries:
        assert await catalog.get_many([]) == []
    assert queries.count == 0


@pytest.mark.parametrize("rows", [5, 500])
async def test_list_statement_count_does_not_grow_with_rows(
    db: Database, session: AsyncSession, rows: int
) -> None:
    ids = await seed_authors(session, rows, books=1, chapters=2)  # 500 books: one IN each
    authors = AuthorRepository(session)
    with count_queries(db) as queries:
        found = await authors.list(any_of(Author.id, ids))  # committed rows of other tests stay out
    assert queries.count == 3, queries.report()  # authors, books, chapters
    assert len(found) == rows
    with count_queries(db) as lazy:
        chapters = [c for author in found for book in author.books for c in book.chapters]
    assert lazy.count == 0
    assert len(chapters) == 2 * rows


async def test_list_filters_orders_and_limits(db: Database, session: AsyncSession) -> None:
    prefix = marker()
    await seed_books(session, 6, prefix=prefix)
    books = BookRepository(session)
    with count_queries(db) as queries:
        found = await books.list(
            Book.price_cents >= 100,
            Book.isbn.startswith(prefix),
            copies=1,
            order_by=("-isbn",),
            limit=2,
        )
    assert queries.count == 1  # the author comes in the same statement (joinedload)
    assert [b.isbn for b in found] == [f"{prefix}-5", f"{prefix}-3"]
    assert found[0].author.email == f"{prefix}@example.com"


async def test_list_accepts_attributes_and_expressions_as_ordering(session: AsyncSession) -> None:
    prefix = marker()
    await seed_books(session, 3, prefix=prefix)
    catalog = CatalogRepository(session)
    by_attribute = await catalog.list(Book.title.startswith(prefix), order_by=[Book.id.desc()])
    by_expression = await catalog.list(
        Book.title.startswith(prefix), order_by=[func.lower(Book.title).desc()]
    )
    assert [b.title for b in by_attribute] == [b.title for b in by_expression]
    assert [b.title[-1] for b in by_attribute] == ["2", "1", "0"]


async def test_equality_filters_cover_hybrids_and_null(session: AsyncSession) -> None:
    prefix = marker()
    ids = await seed_books(session, 3, prefix=prefix)
    catalog = CatalogRepository(session)
    await catalog.withdraw(ids[0])
    kept = await catalog.list(Book.title.startswith(prefix), withdrawn_at=None)
    withdrawn = await catalog.list(Book.title.startswith(prefix), is_withdrawn=True)
    assert [b.id for b in kept] == ids[1:]
    assert [b.id for b in withdrawn] == ids[:1]


async def test_unknown_filter_names_are_refused_by_name(session: AsyncSession) -> None:
    catalog = CatalogRepository(session)
    with pytest.raises(TypeError, match=r"Book has no column 'titel' to filter on"):
        await catalog.list(titel="chair")
    with pytest.raises(TypeError, match=r"relationship 'chapters'"):
        await catalog.count(chapters=None)


async def test_count_and_exists(db: Database, session: AsyncSession) -> None:
    prefix = marker()
    await seed_books(session, 4, prefix=prefix)
    catalog = CatalogRepository(session)
    with count_queries(db) as queries:
        assert await catalog.count(Book.title.startswith(prefix)) == 4
        assert await catalog.exists(title=f"{prefix}-0003") is True
        assert await catalog.exists(title=f"{prefix}-9999") is False
    assert queries.count == 3
    count_sql, *exists_sql = queries.statements
    assert "count(*)" in count_sql
    for sql in exists_sql:
        assert "EXISTS" in sql
        assert "count(" not in sql


async def test_search_text_is_matched_literally(session: AsyncSession) -> None:
    prefix = marker()
    names = ["50% off", "50 percent", "a_b", "axb", "back\\slash", "backslash", "Case"]
    session.add_all(
        [Author(email=f"{prefix}-{i}@example.com", name=n) for i, n in enumerate(names)]
    )
    await session.flush()
    authors = AuthorRepository(session)
    mine = Author.email.startswith(prefix)

    async def search(text: str) -> list[str]:
        return sorted(a.name for a in await authors.list(mine, authors.matching(text), load=()))

    assert await search("50%") == ["50% off"]
    assert await search("a_b") == ["a_b"]
    assert await search("\\") == ["back\\slash"]
    assert await search("case") == ["Case"]
    assert await search("%") == ["50% off"]
    assert escape_like("5%_\\") == "5\\%\\_\\\\"
    literal = contains(Author.name, "x%")
    assert literal.right.value == "%x\\%%"  # type: ignore[attr-defined]


async def test_matching_needs_search_columns(session: AsyncSession) -> None:
    class Plain(Repository[Genre]):
        model = Genre

    with pytest.raises(ConfigurationError, match="declares no search_columns"):
        Plain(session).matching("x")


async def test_row_locks_on_request(db: Database, session: AsyncSession) -> None:
    (book_id,) = await seed_books(session, 1)
    books = BookRepository(session)
    with count_queries(db) as queries:
        await books.get(book_id, load=("author",), for_update=True)
        await books.list(author_id=-1, load=(), skip_locked=True)
    assert queries.count == 2
    assert "FOR UPDATE OF books" in queries.statements[0]
    assert "LEFT OUTER JOIN authors" in queries.statements[0]
    assert queries.statements[1].rstrip().endswith("FOR UPDATE OF books SKIP LOCKED")


# -- keyset pages -----------------------------------------------------------------


async def test_walking_keyset_pages_yields_every_row_once_in_order(
    session: AsyncSession,
) -> None:
    prefix = marker()
    session.add(Author(email=f"{prefix}@example.com", name="Ada"))
    await session.flush()
    author_id = (
        await session.scalars(select(Author.id).where(Author.email == f"{prefix}@example.com"))
    ).one()
    session.add_all(
        [
            Book(
                author_id=author_id, isbn=f"{prefix}-{i:02d}", title=f"n{i % 3}", price_cents=i % 4
            )
            for i in range(23)
        ]
    )
    await session.flush()
    books = BookRepository(session)
    mine = Book.author_id == author_id
    ordering = ("-price_cents", "title")  # mixed directions, many ties: the id breaks them
    expected = [b.id for b in await books.list(mine, order_by=ordering)]
    seen: list[int] = []
    cursor = None
    while True:
        page = await books.page(mine, after=cursor, limit=5, order_by=ordering)
        seen += [b.id for b in page.items]
        assert page.has_more == (page.next_cursor is not None)
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert seen == expected
    assert len(set(seen)) == 23


@pytest.mark.parametrize("rows", [5, 500])
async def test_page_statement_count_does_not_grow_with_rows(
    db: Database, session: AsyncSession, rows: int
) -> None:
    prefix = marker()
    await seed_books(session, rows, prefix=prefix)
    catalog = CatalogRepository(session)
    mine = Book.title.startswith(prefix)
    with count_queries(db) as queries:
        page = await catalog.page(mine, limit=500)
    assert queries.count == 3, queries.report()  # books, chapters, genres
    assert len(page.items) == rows
    assert page.has_more is False
    assert page.next_cursor is None
    assert all(len(b.chapters) == 2 and len(b.genres) == 2 for b in page.items)


async def test_a_full_page_of_500_keeps_one_statement_per_collection(
    db: Database, session: AsyncSession
) -> None:
    prefix = marker()
    await seed_books(session, 501, chapters=1, genres=1, prefix=prefix)
    catalog = CatalogRepository(session)
    with count_queries(db) as queries:
        page = await catalog.page(Book.title.startswith(prefix), limit=500)
    assert queries.count == 3, queries.report()
    assert len(page.items) == 500
    assert page.has_more is True
    last = await catalog.page(Book.title.startswith(prefix), after=page.next_cursor, limit=500)
    assert [b.title for b in last.items] == [f"{prefix}-0500"]
    assert last.has_more is False


async def test_page_totals_on_request(db: Database, session: AsyncSession) -> None:
    prefix = marker()
    await seed_books(session, 7, prefix=prefix)
    catalog = CatalogRepository(session)
    mine = Book.title.startswith(prefix)
    with count_queries(db) as queries:
        page = await catalog.page(mine, limit=3)
    assert page.total is None
    assert queries.count == 3
    with count_queries(db) as queries:
        page = await catalog.page(mine, limit=3, total="exact")
    assert page.total == 7
    assert queries.count == 4
    second = await catalog.page(mine, after=page.next_cursor, limit=3, total="exact")
    assert second.total == 7  # the total ignores the cursor

    await session.execute(text("ANALYZE books"))
    with count_queries(db) as queries:
        page = await catalog.page(mine, limit=3, total="estimate", load=())
    assert queries.count == 2
    exact = await catalog.count()
    assert page.total is not None
    assert abs(page.total - exact) <= max(5, exact // 10)
    assert "reltuples" in queries.statements[1]


async def test_a_cursor_for_another_ordering_or_garbled_raises_invalid_cursor(
    db: Database, session: AsyncSession
) -> None:
    prefix = marker()
    await seed_books(session, 4, prefix=prefix)
    catalog = CatalogRepository(session)
    mine = Book.title.startswith(prefix)
    page = await catalog.page(mine, limit=2)
    assert page.next_cursor is not None
    with count_queries(db) as queries:
        with pytest.raises(InvalidCursor):
            await catalog.page(mine, after=page.next_cursor, limit=2, order_by=("-title",))
        with pytest.raises(InvalidCursor):
            await catalog.page(mine, after=page.next_cursor[:-2], limit=2)
        with pytest.raises(InvalidCursor):
            await catalog.page(mine, after="'; DROP TABLE books; --", limit=2)
        with pytest.raises(InvalidCursor):  # the same model, ordered by isbn
            await BookRepository(session).page(after=page.next_cursor)
        with pytest.raises(InvalidCursor):  # another model
            await AuthorRepository(session).page(after=page.next_cursor)
    assert queries.count == 0  # refused before any SQL
    rest = await catalog.page(mine, after=page.next_cursor, limit=2)  # the transaction is fine
    assert len(rest.items) == 2


async def test_keyset_pages_refuse_nullable_and_expression_keys(session: AsyncSession) -> None:
    catalog = CatalogRepository(session)
    with pytest.raises(TypeError, match=r"NOT NULL sort columns; Book.withdrawn_at is nullable"):
        await catalog.page(order_by=("withdrawn_at",))
    with pytest.raises(TypeError, match="mapped columns only"):
        await catalog.page(order_by=(func.lower(Book.title),))


@pytest.mark.parametrize("limit", [0, -1, 501, "10"])
async def test_page_sizes_are_bounded(session: AsyncSession, limit: Any) -> None:
    with pytest.raises(ValueError, match="limit must be"):
        await CatalogRepository(session).page(limit=limit)


async def test_offset_pages(db: Database, session: AsyncSession) -> None:
    prefix = marker()
    await seed_books(session, 7, prefix=prefix)
    catalog = CatalogRepository(session)
    mine = Book.title.startswith(prefix)
    with count_queries(db) as queries:
        first = await catalog.offset_page(mine, page=1, limit=3)
    assert queries.count == 4  # books, chapters, genres, count
    assert first.total == 7
    assert first.has_more is True
    third = await catalog.offset_page(mine, page=3, limit=3, total=None)
    assert [b.title for b in third.items] == [f"{prefix}-0006"]
    assert third.has_more is False
    assert third.total is None
    beyond = await catalog.offset_page(mine, page=9, limit=3)
    assert beyond.items == ()
    assert beyond.has_more is False
    with pytest.raises(ValueError, match="page must be"):
        await catalog.offset_page(page=0)


# -- writes -----------------------------------------------------------------------


async def test_add_returns_server_defaults_in_one_statement(
    db: Database, session: AsyncSession
) -> None:
    author_id = await seed_author(session)
    books = BookRepository(session)
    with count_queries(db) as queries:
        book = await books.add(Book(author_id=author_id, isbn=marker(), title="b", price_cents=5))
    assert queries.count == 1
    assert "RETURNING" in queries.statements[0]
    with count_queries(db) as after:
        assert book.id > 0
        assert book.copies == 0
        assert book.status == "draft"
        assert book.created_at is not None
    assert after.count == 0


async def test_add_of_a_duplicate_raises_conflict_naming_the_constraint(
    session: AsyncSession,
) -> None:
    author_id = await seed_author(session)
    books = BookRepository(session)
    isbn = f"SECRET-{marker()}"
    await books.add(Book(author_id=author_id, isbn=isbn, title="a", price_cents=1))
    with pytest.raises(Conflict) as caught:
        await books.add(Book(author_id=author_id, isbn=isbn, title="b", price_cents=1))
    assert caught.value.constraint == "uq_books_isbn"
    assert caught.value.sqlstate == "23505"
    assert isbn not in str(caught.value)
    assert caught.value.__cause__ is not None
    await session.rollback()


async def test_add_refuses_another_model(session: AsyncSession) -> None:
    with pytest.raises(TypeError, match="BookRepository stores Book objects, not Author"):
        await BookRepository(session).add(Author(email="x", name="x"))  # type: ignore[arg-type]


@pytest.mark.parametrize("rows", [5, 100, 500])
async def test_add_many_is_one_insert_with_returning(
    db: Database, session: AsyncSession, rows: int
) -> None:
    author_id = await seed_author(session)
    prefix = marker()
    books = BookRepository(session)
    new = [
        Book(author_id=author_id, isbn=f"{prefix}-{i}", title="b", price_cents=i)
        for i in range(rows)
    ]
    with count_queries(db) as queries:
        added = await books.add_many(new)
    assert queries.count == 1, queries.report()
    assert queries.statements[0].startswith("INSERT INTO books")
    assert added == new
    assert len({b.id for b in added}) == rows
    assert all(b.created_at is not None and b.copies == 0 for b in added)
    assert [b.price_cents for b in await books.get_many([b.id for b in added])] == list(range(rows))


async def test_update_is_one_update_returning_and_refreshes_the_object(
    db: Database, session: AsyncSession
) -> None:
    author_id = await seed_author(session)
    session.add(Book(author_id=author_id, isbn=marker(), title="b", price_cents=1))
    await session.flush()
    session.expunge_all()
    books = BookRepository(session)
    (book,) = await books.list(author_id=author_id, load=())
    with count_queries(db) as queries:
        updated = await books.update(book.id, copies=Book.copies + 7, title="renamed")
    assert queries.count == 1
    assert queries.statements[0].startswith("UPDATE books SET")
    assert "RETURNING" in queries.statements[0]
    assert updated is book
    with count_queries(db) as after:
        assert (book.copies, book.title) == (7, "renamed")
    assert after.count == 0


async def test_update_errors(db: Database, session: AsyncSession) -> None:
    (book_id,) = await seed_books(session, 1)
    books = BookRepository(session)
    with (
        count_queries(db) as queries,
        pytest.raises(NotFound, match=r"^Book 987654321 not found$"),
    ):
        await books.update(987654321, title="x")
    assert queries.count == 1
    with pytest.raises(TypeError, match="Book has no column"):
        await books.update(book_id, colour="red")
    with pytest.raises(TypeError, match="at least one column"):
        await books.update(book_id)
    with pytest.raises(CheckViolation) as caught:
        await books.update(book_id, price_cents=-1)
    assert caught.value.constraint is not None
    assert "price_cents_non_negative" in caught.value.constraint
    await session.rollback()


async def test_delete_is_one_statement(db: Database, session: AsyncSession) -> None:
    ids = await seed_books(session, 2)
    catalog = CatalogRepository(session)
    loaded = await catalog.get(ids[0])
    with count_queries(db) as queries:
        await catalog.delete(ids[0])
    assert queries.count == 1
    assert queries.statements[0].startswith("DELETE FROM books")
    assert loaded not in session
    assert await catalog.get_or_none(ids[0]) is None
    assert await Chapters(session).count(book_id=ids[0]) == 0  # cascaded
    assert await Chapters(session).count(book_id=ids[1]) == 2
    with pytest.raises(NotFound, match=rf"^Book {ids[0]} not found$"):
        await catalog.delete(ids[0])


async def test_a_missing_reference_raises_foreign_key_violation(session: AsyncSession) -> None:
    books = BookRepository(session)
    with pytest.raises(ForeignKeyViolation) as caught:
        await books.add(Book(author_id=987654321, isbn=marker(), title="b", price_cents=1))
    assert caught.value.constraint == "fk_books_author_id_authors"
    assert caught.value.sqlstate == "23503"
    await session.rollback()


async def test_deleting_a_restricted_parent_raises_a_foreign_key_violation(
    session: AsyncSession,
) -> None:
    (book_id,) = await seed_books(session, 1)
    book = await BookRepository(session).get(book_id, load=())
    with pytest.raises(ForeignKeyViolation) as caught:  # ON DELETE RESTRICT: SQLSTATE 23001
        await AuthorRepository(session).delete(book.author_id)
    assert caught.value.constraint == "fk_books_author_id_authors"
    assert caught.value.sqlstate == "23001"
    await session.rollback()


async def test_update_where_and_delete_where(db: Database, session: AsyncSession) -> None:
    prefix = marker()
    await seed_books(session, 6, prefix=prefix)
    books = BookRepository(session)
    mine = Book.isbn.startswith(prefix)
    with count_queries(db) as queries:
        changed = await books.update_where(mine, copies=0, values={"price_cents": 9})
        deleted = await books.delete_where(mine, copies=1)
    assert queries.count == 2
    assert (changed, deleted) == (3, 3)
    assert await books.count(mine, price_cents=9) == 3
    assert await books.count(mine) == 3
    with pytest.raises(TypeError, match="needs a filter"):
        await books.update_where(values={"copies": 0})
    with pytest.raises(TypeError, match="needs a filter"):
        await books.delete_where()
    assert await books.update_where(true(), Book.id < 0, values={"copies": 0}) == 0


async def test_upsert_inserts_then_updates_in_one_statement_each(
    db: Database, session: AsyncSession
) -> None:
    authors = AuthorRepository(session)
    email = f"{marker()}@example.com"
    with count_queries(db) as queries:
        first = await authors.upsert({"email": email, "name": "Ada"})
        second = await authors.upsert({"email": email, "name": "Ada L."})
    assert queries.count == 2
    for sql in queries.statements:
        assert "ON CONFLICT (email) DO UPDATE" in sql
        assert "RETURNING" in sql
    assert second is first
    assert first.name == "Ada L."
    kept = await authors.upsert({"email": email, "name": "ignored"}, update=())
    assert kept is first
    assert kept.name == "Ada L."
    assert await authors.count(email=email) == 1


async def test_upsert_many_is_one_statement_in_input_order(
    db: Database, session: AsyncSession
) -> None:
    author_id = await seed_author(session)
    prefix = marker()
    books = BookRepository(session)
    await books.add(Book(author_id=author_id, isbn=f"{prefix}-050", title="old", price_cents=1))
    rows = [
        {"author_id": author_id, "isbn": f"{prefix}-{i:03d}", "title": "new", "price_cents": i}
        for i in reversed(range(100))
    ]
    with count_queries(db) as queries:
        upserted = await books.upsert_many(rows)
    assert queries.count == 1, queries.report()
    assert [b.isbn for b in upserted] == [r["isbn"] for r in rows]
    assert {b.title for b in upserted} == {"new"}
    assert await books.count(Book.isbn.startswith(prefix)) == 100
    with count_queries(db) as queries:
        assert await books.upsert_many([]) == []
    assert queries.count == 0


async def test_upsert_input_errors(session: AsyncSession) -> None:
    authors = AuthorRepository(session)
    row = {"email": "a@example.com", "name": "A"}
    with pytest.raises(ValueError, match="rows 0 and 1 have the same email"):
        await authors.upsert_many([row, dict(row)])
    with pytest.raises(ValueError, match="row 1 sets different columns"):
        await authors.upsert_many([row, {"email": "b@example.com"}])
    with pytest.raises(ValueError, match="conflict key"):
        await authors.upsert({"name": "A"})
    with pytest.raises(TypeError, match="Author has no column"):
        await authors.upsert({"email": "a@example.com", "nickname": "A"})
    with pytest.raises(ConfigurationError, match=r"no unique constraint on \(name\)"):
        await authors.upsert(row, on=("name",))
    with pytest.raises(ConfigurationError, match="declares no upsert_on"):
        await CatalogRepository(session).upsert({"isbn": "x"})


async def test_copy_loads_rows_inside_the_transaction(db: Database, session: AsyncSession) -> None:
    author_id = await seed_author(session)
    prefix = marker()
    books = BookRepository(session)
    records = [(author_id, f"{prefix}-{i}", "copied", i) for i in range(1000)]
    with count_queries(db) as queries:
        copied = await books.copy(records, columns=["author_id", "isbn", "title", "price_cents"])
    assert copied == 1000
    assert queries.count == 0  # COPY goes through asyncpg, beside SQLAlchemy
    assert await books.count(Book.isbn.startswith(prefix), copies=0) == 1000
    await session.rollback()  # rolls back the test's savepoint, and the copy with it
    assert await books.count(Book.isbn.startswith(prefix)) == 0


async def test_copy_translates_errors_and_checks_columns(session: AsyncSession) -> None:
    author_id = await seed_author(session)
    books = BookRepository(session)
    columns = ["author_id", "isbn", "title", "price_cents"]
    with pytest.raises(TypeError, match="Book has no column"):
        await books.copy([], columns=["isbn", "colour"])
    with pytest.raises(Conflict) as caught:
        await books.copy([(author_id, "dup", "a", 1), (author_id, "dup", "b", 1)], columns=columns)
    assert caught.value.constraint == "uq_books_isbn"
    await session.rollback()


async def test_composite_primary_keys(db: Database, session: AsyncSession) -> None:
    (book_id,) = await seed_books(session, 1, chapters=3)
    chapters = Chapters(session)
    rows = await chapters.list(book_id=book_id)
    keys = [(row.book_id, row.number) for row in rows]
    with count_queries(db) as queries:
        one = await chapters.get(keys[1])
        many = await chapters.get_many([keys[2], keys[0]])
        page = await chapters.page(book_id=book_id, limit=2)
        rest = await chapters.page(book_id=book_id, after=page.next_cursor, limit=2)
    assert queries.count == 4
    assert (one.book_id, one.number) == keys[1]
    assert [(r.book_id, r.number) for r in many] == [keys[2], keys[0]]
    assert [(r.book_id, r.number) for r in page.items + rest.items] == keys
    assert one.book.title.endswith("-0000")  # the plan's many-to-one, joined
    with pytest.raises(TypeError, match="composite primary key: pass a tuple of 2"):
        await chapters.get(book_id)
