"""The library test domain: authors, books, chapters, genres; a reader role.

Beyond what the models declare: the `library_set_updated_at()` trigger keeps
every `updated_at` right whoever issues the UPDATE, and the NOLOGIN role
``library_reader`` reads through row-level security on books: a
reader sees published books, and its own (``author_id`` equal to the ``sub``
claim of the ``library.claims`` setting). The role belongs to the cluster: it
is created only if missing and dropped only if no other database uses it.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READER = "library_reader"
TABLES = ("authors", "books", "chapters", "genres", "book_genres")
TIMESTAMPED = ("authors", "books")

book_status = postgresql.ENUM(
    "draft", "published", "out_of_print", name="book_status", create_type=False
)

# The author id of the transaction's claims, or NULL (no claims, no integer ``sub``).
CLAIMED_AUTHOR = (
    "(SELECT CASE WHEN sub ~ '^[0-9]{1,18}$' THEN sub::bigint END FROM ("
    "SELECT CAST(NULLIF(current_setting('library.claims', true), '') AS jsonb) ->> 'sub'"
    ") AS claims (sub))"
)


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger(), sa.Identity(always=False), primary_key=True)


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)
        for name in ("created_at", "updated_at")
    ]


def upgrade() -> None:
    book_status.create(op.get_bind())
    op.create_table(
        "authors",
        _id(),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_authors"),
        sa.UniqueConstraint("email", name="uq_authors_email"),
    )
    op.create_table(
        "books",
        _id(),
        sa.Column("author_id", sa.BigInteger(), nullable=False),
        sa.Column("isbn", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("copies", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", book_status, server_default="draft", nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_books"),
        sa.UniqueConstraint("isbn", name="uq_books_isbn"),
        sa.ForeignKeyConstraint(
            ["author_id"], ["authors.id"], ondelete="RESTRICT", name="fk_books_author_id_authors"
        ),
        sa.CheckConstraint("price_cents >= 0", name=op.f("ck_books_price_cents_non_negative")),
        sa.CheckConstraint("copies >= 0", name=op.f("ck_books_copies_non_negative")),
    )
    op.create_index("ix_books_author_id", "books", ["author_id"])
    op.create_index("ix_books_title", "books", ["title"])
    op.create_table(
        "chapters",
        sa.Column("book_id", sa.BigInteger(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("book_id", "number", name="pk_chapters"),
        sa.ForeignKeyConstraint(
            ["book_id"], ["books.id"], ondelete="CASCADE", name="fk_chapters_book_id_books"
        ),
        sa.CheckConstraint("pages > 0", name=op.f("ck_chapters_pages_positive")),
    )
    op.create_table(
        "genres",
        _id(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_genres"),
        sa.UniqueConstraint("name", name="uq_genres_name"),
    )
    op.create_table(
        "book_genres",
        sa.Column("book_id", sa.BigInteger(), nullable=False),
        sa.Column("genre_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("book_id", "genre_id", name="pk_book_genres"),
        sa.ForeignKeyConstraint(
            ["book_id"], ["books.id"], ondelete="CASCADE", name="fk_book_genres_book_id_books"
        ),
        sa.ForeignKeyConstraint(
            ["genre_id"], ["genres.id"], ondelete="CASCADE", name="fk_book_genres_genre_id_genres"
        ),
    )
    op.create_index("ix_book_genres_genre_id", "book_genres", ["genre_id"])

    op.execute(
        """
        CREATE FUNCTION library_set_updated_at() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at := now();
            RETURN NEW;
        END
        $$
        """
    )
    for table in TIMESTAMPED:
        op.execute(
            f"CREATE TRIGGER {table}_set_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION library_set_updated_at()"
        )

    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER}') THEN
                CREATE ROLE {READER} NOLOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END
        $$
        """
    )
    op.execute(f"GRANT {READER} TO CURRENT_USER")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {READER}")
    op.execute(f"GRANT SELECT ON {', '.join(TABLES)} TO {READER}")
    op.execute("ALTER TABLE books ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY books_visible ON books FOR SELECT TO {READER} "
        f"USING (status = 'published' OR author_id = {CLAIMED_AUTHOR})"
    )


def downgrade() -> None:
    op.execute("DROP POLICY books_visible ON books")
    op.execute(f"REVOKE ALL ON {', '.join(TABLES)} FROM {READER}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {READER}")
    op.execute(
        f"""
        DO $$
        BEGIN
            DROP ROLE IF EXISTS {READER};
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'role {READER} is still used by another database: kept';
        END
        $$
        """
    )
    for table in ("book_genres", "genres", "chapters", "books", "authors"):
        op.drop_table(table)  # indexes, triggers and policies go with their table
    op.execute("DROP FUNCTION library_set_updated_at()")
    book_status.drop(op.get_bind())
