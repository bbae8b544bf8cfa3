"""The library's repositories and unit of work, written as a service would write them."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sqlalchemy import func
from tests.library.models import Author, Book, Genre

from harbordb import Repository, UnitOfWork


class AuthorRepository(Repository[Author]):
    """Authors with their books and the books' chapters (one statement for a `get`,
    three for a `list`)."""

    model = Author
    load = ("books.chapters",)
    upsert_on = ("email",)
    search_columns = ("email", "name")


class BookRepository(Repository[Book]):
    """Books with their author, joined into the same statement."""

    model = Book
    load = ("author",)
    order_by = ("isbn",)
    upsert_on = ("isbn",)
    search_columns = ("title", "isbn")


class CatalogRepository(Repository[Book]):
    """Books as a catalog shows them: with chapters and genres (one statement for a
    `get`, three for a `list`)."""

    model = Book
    load = ("chapters", "genres")
    order_by = ("title",)
    search_columns = ("title",)

    async def withdraw(self, id: int, /) -> Book:
        """Take a book off the catalog; the first withdrawal time stays. One UPDATE."""
        return await self.update(id, withdrawn_at=func.coalesce(Book.withdrawn_at, func.now()))


class GenreRepository(Repository[Genre]):
    model = Genre
    order_by = ("name",)
    upsert_on = ("name",)


class LibraryWork(UnitOfWork):
    """The library's unit of work: its repositories as attributes."""

    @property
    def authors(self) -> AuthorRepository:
        return self.repository(AuthorRepository)

    @property
    def books(self) -> BookRepository:
        return self.repository(BookRepository)

    @property
    def catalog(self) -> CatalogRepository:
        return self.repository(CatalogRepository)

    @property
    def genres(self) -> GenreRepository:
        return self.repository(GenreRepository)


ROLES: Mapping[str, str] = MappingProxyType({"reader": "library_reader"})
"""The one role a library unit of work may assume (created by the library's migration)."""

CLAIMS_SETTING = "library.claims"

DATABASE_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {"unit_of_work": LibraryWork, "roles": ROLES, "claims_setting": CLAIMS_SETTING}
)
"""What the library's tests pass to `Database` besides the URL."""
