"""blogsvc on harbordb: repositories on BlogWork, roles, claims, row-level security.

Every test runs directly against PostgreSQL and through PgBouncer. Units of work
here commit for real: names carry a random tag, so tests do not see each other.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic import command
from harbordb import ConfigurationError, Database, NotFound, PermissionDenied
from harbordb.testing.cluster import PgBouncer
from harbordb.testing.plugin import alembic_config

from blogsvc.models import Author, Post
from blogsvc.publishing import own_posts, publish_first_post
from blogsvc.work import BlogWork, blog_database

ALEMBIC_INI = Path(__file__).parents[1] / "alembic.ini"


@pytest.fixture(params=["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)])
def db(request: pytest.FixtureRequest) -> Database[BlogWork]:
    """The plugin's `database` (direct) or `pooled_database` (through PgBouncer)."""
    name = "database" if request.param == "direct" else "pooled_database"
    database: Database[BlogWork] = request.getfixturevalue(name)
    return database


async def add_author(db: Database[BlogWork], *titles: str) -> Author:
    """A committed author with a unique name and these posts."""
    async with db.unit_of_work() as uow:
        author = await uow.authors.add(Author(name=f"author-{uuid.uuid4().hex[:10]}"))
        await uow.posts.add_many(Post(author_id=author.id, title=title) for title in titles)
        await uow.commit()
    return author


async def test_repositories_on_blog_work(db: Database[BlogWork]) -> None:
    author = await add_author(db, "Hello", "Again")
    async with db.unit_of_work(read_only=True) as uow:
        posts = await uow.posts.by_author(author.id)
    # Read in the unit of work, used after it: the load plan loaded each post's author.
    assert sorted(post.title for post in posts) == ["Again", "Hello"]
    assert {post.author.name for post in posts} == {author.name}

    found = await db.run(lambda uow: uow.authors.get(author.id))
    assert found.name == author.name
    with pytest.raises(NotFound):
        await db.run(lambda uow: uow.authors.get(-1))


async def test_the_service_functions(db: Database[BlogWork]) -> None:
    name = f"author-{uuid.uuid4().hex[:10]}"
    ann = await publish_first_post(db, name, "Hello")
    await add_author(db, "someone else's")
    posts = await own_posts(db, ann.id)
    assert [(post.title, post.author.name) for post in posts] == [("Hello", name)]


async def test_blog_database_reads_the_environment(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARBORDB_DATABASE_URL", migrated_url)
    async with blog_database() as db:
        author = await add_author(db, "from the environment")
        assert [post.title for post in await own_posts(db, author.id)] == ["from the environment"]


async def test_a_reader_sees_only_their_own_posts(db: Database[BlogWork]) -> None:
    ann = await add_author(db, "Ann's")
    bob = await add_author(db, "Bob's 1", "Bob's 2")
    async with db.unit_of_work(role="reader", claims={"sub": str(bob.id)}) as uow:
        visible = await uow.posts.list()
        assert await uow.posts.count(author_id=ann.id) == 0
    assert sorted(post.title for post in visible) == ["Bob's 1", "Bob's 2"]

    async with db.unit_of_work(role="reader") as uow:  # no claims: no posts
        assert await uow.posts.list() == []
    async with db.unit_of_work() as uow:  # no role: the owner sees every post
        assert await uow.posts.count(author_id=ann.id) == 1


async def test_a_writer_writes_only_as_themselves(db: Database[BlogWork]) -> None:
    ann = await add_author(db)
    bob = await add_author(db)
    async with db.unit_of_work(role="writer", claims={"sub": str(ann.id)}) as uow:
        await uow.posts.add(Post(author_id=ann.id, title="mine"))
        await uow.commit()
    with pytest.raises(PermissionDenied):
        async with db.unit_of_work(role="writer", claims={"sub": str(ann.id)}) as uow:
            await uow.posts.add(Post(author_id=bob.id, title="in Bob's name"))
    async with db.unit_of_work(role="reader", claims={"sub": str(bob.id)}) as uow:
        assert await uow.posts.list() == []
    with pytest.raises(PermissionDenied):  # the reader role may not write at all
        async with db.unit_of_work(role="reader", claims={"sub": str(ann.id)}) as uow:
            await uow.posts.add(Post(author_id=ann.id, title="read-only"))


@pytest.mark.parametrize("via", ["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)])
async def test_a_role_the_server_lacks_is_named(
    via: str, migrated_url: str, request: pytest.FixtureRequest
) -> None:
    roles = {"editor": "blog_editor"}  # no migration creates blog_editor
    if via == "direct":
        db = Database(migrated_url, unit_of_work=BlogWork, roles=roles)
    else:
        bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
        db = Database(bouncer.url, unit_of_work=BlogWork, roles=roles, pooler="external")
    async with db:
        with pytest.raises(ConfigurationError, match="role 'editor' maps to database role"):
            async with db.unit_of_work(role="editor") as uow:
                await uow.posts.list()


def test_the_models_match_the_migrations(migrated_url: str) -> None:
    command.check(alembic_config(migrated_url, ALEMBIC_INI))
