from __future__ import annotations

from harbordb import Repository

from blogsvc.models import Author, Post


class AuthorRepository(Repository[Author]):
    model = Author
    order_by = ("name",)


class PostRepository(Repository[Post]):
    model = Post
    load = ("author",)  # every read loads the author too: nothing lazy-loads later
    order_by = ("-created_at",)  # newest first; the primary key breaks ties

    async def by_author(self, author_id: int) -> list[Post]:
        return await self.list(author_id=author_id)
