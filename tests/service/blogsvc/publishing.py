from __future__ import annotations

from harbordb import Database

from blogsvc.models import Author, Post
from blogsvc.work import BlogWork


async def publish_first_post(db: Database[BlogWork], author_name: str, title: str) -> Author:
    async with db.unit_of_work() as uow:  # uow is a BlogWork: uow.authors, uow.posts
        author = await uow.authors.add(Author(name=author_name))
        await uow.posts.add(Post(author_id=author.id, title=title))
        await uow.commit()  # leave the block without it and nothing is written
    return author


async def own_posts(db: Database[BlogWork], author_id: int) -> list[Post]:
    """The posts the reader role may see with these claims: this author's, by row-level security."""
    claims = {"sub": str(author_id)}  # e.g. your verified JWT's payload
    async with db.unit_of_work(role="reader", claims=claims, read_only=True) as uow:
        posts = await uow.posts.list()
    return posts  # loaded in the block, readable after it (post.author too: the load plan)
