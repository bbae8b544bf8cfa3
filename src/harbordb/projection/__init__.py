"""Typed projections: frozen read objects built straight from the driver's rows.

A service declares what a read returns, as dataclasses, and from which model
and relationships each field comes; harbordb compiles the whole tree into one
statement (nested ``array_agg(ROW(...))`` subqueries for relationships) and
builds the objects from asyncpg's rows on the unit of work's connection::

    @dataclass(frozen=True, slots=True)
    class BookLine:
        id: int
        title: str

    @dataclass(frozen=True, slots=True)
    class AuthorCard:
        id: int
        name: str
        books: tuple[BookLine, ...]          # Author.books, ordered as the relationship
        genres: tuple[str, ...]              # Genre.name through Author.genres

    AUTHOR_CARDS = Projection(
        AuthorCard, Author,
        books=Projection(BookLine, Book),
        genres=related(Author.genres, Genre.name, order_by=("name",)),
    )

    async with db.unit_of_work() as uow:
        card = await AUTHOR_CARDS.get(uow, author_id)        # AuthorCard | None
        page = await AUTHOR_CARDS.page(uow, limit=20, order_by=("name",))

Projection classes are dataclasses (slotted frozen ones are built fastest:
`harbordb.projection.build`), or ``msgspec.Struct`` subclasses (the ``fast``
extra), built in C.

Wide reads (an ``all`` of a hundred parents or more) read each relationship
with one ``= ANY`` statement instead of nesting it (`harbordb.projection.levels`):
chosen per read, or forced with ``per_level=True`` / ``False``.

Projections are not ORM objects: they are not in the session, cannot load
anything later, and cannot be changed. Read with them; write through the
repositories.
"""

from harbordb.projection.reads import Filter, Projection
from harbordb.projection.shape import Related, related

__all__ = ["Filter", "Projection", "Related", "related"]
