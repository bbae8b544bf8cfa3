from __future__ import annotations

from harbordb import Database, UnitOfWork

from blogsvc.repositories import AuthorRepository, PostRepository

# Public role names -> database roles (migration blog_0001 creates them).
ROLES = {"reader": "blog_reader", "writer": "blog_writer"}
CLAIMS_SETTING = "blog.claims"  # the setting the row-level security policies read


class BlogWork(UnitOfWork):
    @property
    def authors(self) -> AuthorRepository:
        return self.repository(AuthorRepository)

    @property
    def posts(self) -> PostRepository:
        return self.repository(PostRepository)


def blog_database(url: str | None = None) -> Database[BlogWork]:
    """At startup; without a URL: HARBORDB_DATABASE_URL, HARBORDB_POOLER, ... (Settings)."""
    return Database(url, unit_of_work=BlogWork, roles=ROLES, claims_setting=CLAIMS_SETTING)
