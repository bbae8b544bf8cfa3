"""authors, posts; roles blog_reader and blog_writer; posts under row-level security

An author's posts are theirs: under either role a unit of work sees (and the
writer changes) only the posts whose author_id is the ``sub`` claim of
``blog.claims``. Without claims it sees none. The table owner (the role that
migrates) bypasses the policies.

Revision ID: blog_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "blog_0001"
down_revision = None
branch_labels = None
depends_on = None

ROLES = ("blog_reader", "blog_writer")
NOW = sa.func.now()

# The author id of the transaction's claims, or NULL (no claims, no sub, not a number).
CURRENT_AUTHOR = """
CREATE FUNCTION blog_current_author() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN sub ~ '^[0-9]{1,18}$' THEN sub::bigint END
    FROM (SELECT CAST(NULLIF(current_setting('blog.claims', true), '') AS jsonb) ->> 'sub')
        AS claims (sub)
$$
"""

# updated_at is the server's business (harbordb's Timestamps mixin).
TOUCH = """
CREATE FUNCTION blog_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "authors",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_authors"),
        sa.UniqueConstraint("name", name="uq_authors_name"),
    )
    op.create_table(
        "posts",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("author_id", sa.BigInteger, nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_posts"),
        sa.ForeignKeyConstraint(["author_id"], ["authors.id"], name="fk_posts_author_id_authors"),
    )
    op.create_index("ix_posts_author_id", "posts", ["author_id"])
    op.execute(TOUCH)
    op.execute(
        "CREATE TRIGGER posts_touch BEFORE UPDATE ON posts "
        "FOR EACH ROW EXECUTE FUNCTION blog_touch()"
    )

    for role in ROLES:  # roles belong to the cluster: another database may have made them
        op.execute(
            f"DO $$ BEGIN CREATE ROLE {role} NOLOGIN; "
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        )
        op.execute(f"GRANT {role} TO CURRENT_USER")  # the service's login may assume it
    op.execute("GRANT SELECT ON authors, posts TO blog_reader, blog_writer")
    op.execute("GRANT INSERT, UPDATE, DELETE ON posts TO blog_writer")
    op.execute(CURRENT_AUTHOR)
    op.execute("ALTER TABLE posts ENABLE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY posts_read ON posts FOR SELECT TO blog_reader, blog_writer "
        "USING (author_id = (SELECT blog_current_author()))"
    )
    op.execute(
        "CREATE POLICY posts_write ON posts FOR ALL TO blog_writer "
        "USING (author_id = (SELECT blog_current_author())) "
        "WITH CHECK (author_id = (SELECT blog_current_author()))"
    )


def downgrade() -> None:
    op.drop_table("posts")
    op.drop_table("authors")
    op.execute("DROP FUNCTION blog_current_author()")
    op.execute("DROP FUNCTION blog_touch()")
    # The roles stay: other databases of the cluster may use them.
