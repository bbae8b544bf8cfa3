"""`harbordb.Projection` on the library's own test models (tests/library): a composite
primary key below a collection, a many-to-many, an enum, a hybrid property, and a
keyset page whose cursor the repository made. Rows are written in the unit of work
and read back in it (the reads run in its transaction), then rolled back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from tests.library.models import Author, Book, BookStatus, Chapter, Genre
from tests.library.repositories import LibraryWork

from harbordb import Database, Projection, count_queries, related


@dataclass(frozen=True, slots=True)
class ChapterLine:
    number: int
    title: str


@dataclass(frozen=True, slots=True)
class BookCard:
    id: int
    title: str
    status: BookStatus
    in_stock: bool
    author_name: str
    chapters: tuple[ChapterLine, ...]
    genres: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Shelf:
    id: int
    name: str
    books: tuple[BookCard, ...]


BOOK_CARDS = Projection(
    BookCard,
    Book,
    in_stock=lambda book: book.in_stock,  # a hybrid, on the aliased entity
    author_name="author.name",
    chapters=Projection(ChapterLine, Chapter),
    genres=related(Book.genres, Genre.name, order_by=("name",)),
)
SHELVES = Projection(Shelf, Author, books=BOOK_CARDS)


async def test_a_library_shelf_in_one_statement(db: Database[LibraryWork]) -> None:
    tag = uuid.uuid4().hex[:8]
    async with db.unit_of_work() as uow:
        poetry, essays = Genre(name=f"{tag}-poetry"), Genre(name=f"{tag}-essays")
        author = Author(
            email=f"{tag}@example.com",
            name=f"Ada {tag}",
            books=[
                Book(
                    isbn=f"{tag}-1",
                    title="Tides",
                    price_cents=100,
                    copies=2,
                    status=BookStatus.PUBLISHED,
                    chapters=[
                        Chapter(number=2, title="Ebb", pages=3),
                        Chapter(number=1, title="Flow", pages=4),
                    ],
                    genres=[poetry, essays],
                ),
                Book(isbn=f"{tag}-2", title="Drafts", price_cents=0, copies=0),
            ],
        )
        uow.session.add(author)
        await uow.session.flush()
        first, second = (book.id for book in author.books)
        with count_queries(db) as queries:
            shelf = await SHELVES.get(uow, author.id)
        assert queries.count == 1
        assert shelf == Shelf(
            author.id,
            f"Ada {tag}",
            (
                BookCard(
                    first,
                    "Tides",
                    BookStatus.PUBLISHED,
                    True,
                    f"Ada {tag}",
                    (ChapterLine(1, "Flow"), ChapterLine(2, "Ebb")),
                    (f"{tag}-essays", f"{tag}-poetry"),
                ),
                BookCard(second, "Drafts", BookStatus.DRAFT, False, f"Ada {tag}", (), ()),
            ),
        )
        mine = BOOK_CARDS.where(lambda book: book.author_id == author.id)
        first_page = await uow.books.page(Book.author_id == author.id, limit=1, order_by=("title",))
        rest = await mine.page(uow, after=first_page.next_cursor, limit=5, order_by=("title",))
        assert [card.title for card in first_page.items] == ["Drafts"]
        assert [card.title for card in rest.items] == ["Tides"]
        assert rest.next_cursor is None
