"""notes, with one row

Revision ID: n1
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "n1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("body", sa.Text)
    )
    op.bulk_insert(sa.table("notes", sa.column("body", sa.Text)), [{"body": "it's here"}])


def downgrade() -> None:
    op.drop_table("notes")
