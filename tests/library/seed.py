"""Committed library rows, for tests whose code under test opens units of work of its own.

Everything seeded is named after a `prefix` (author emails ``{prefix}-…``, isbns
``{prefix}-…``); `delete_seeded` removes it all.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from tests.library.models import Author, Book
from tests.library.repositories import LibraryWork

from harbordb import Database


async def seed_books(db: Database[LibraryWork], prefix: str, copies: Sequence[int]) -> list[Book]:
    """A committed author with one book per entry of `copies` (its copies), in that order."""
    tag = uuid.uuid4().hex[:12]
    async with db.unit_of_work() as uow:
        author = await uow.authors.add(Author(email=f"{prefix}-{tag}@example.com", name=prefix))
        books = await uow.books.add_many(
            [
                Book(author_id=author.id, isbn=f"{prefix}-{tag}-{i}", title=f"b{i}", copies=n,
                     price_cents=100)
                for i, n in enumerate(copies)
            ]
        )  # fmt: skip
        await uow.commit()
    return books


async def delete_seeded(db: Database[LibraryWork], prefix: str) -> None:
    """Delete the books and authors named after `prefix`, in one committed unit of work."""
    async with db.unit_of_work() as uow:
        await uow.books.delete_where(Book.isbn.startswith(f"{prefix}-"))
        await uow.authors.delete_where(Author.email.startswith(f"{prefix}-"))
        await uow.commit()
