"""Harbor Commerce schema: catalog, customers, stock reservations, orders.

Reviewed by hand. Beyond what the models declare, this revision installs the
`harbordb_set_updated_at()` trigger function that keeps every `updated_at`
column right, whoever issues the UPDATE (ORM, Core, raw SQL).

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPED = ("customers", "products", "variants", "stock_reservations", "orders")

reservation_status = postgresql.ENUM(
    "active", "released", "expired", "checked_out", name="reservation_status", create_type=False
)
order_status = postgresql.ENUM(
    "pending", "paid", "cancelled", name="order_status", create_type=False
)


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger(), sa.Identity(always=False), primary_key=True)


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    ]


def upgrade() -> None:
    reservation_status.create(op.get_bind())
    order_status.create(op.get_bind())

    op.create_table(
        "customers",
        _id(),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_customers"),
        sa.UniqueConstraint("email", name="uq_customers_email"),
    )

    op.create_table(
        "products",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_products"),
    )
    op.create_index("ix_products_name", "products", ["name"])
    op.create_index(
        "ix_products_live", "products", ["id"], postgresql_where=sa.text("archived_at IS NULL")
    )

    op.create_table(
        "tags",
        _id(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tags"),
        sa.UniqueConstraint("name", name="uq_tags_name"),
    )

    op.create_table(
        "product_tags",
        sa.Column("product_id", sa.BigInteger(), nullable=False),
        sa.Column("tag_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", "tag_id", name="pk_product_tags"),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            ondelete="CASCADE",
            name="fk_product_tags_product_id_products",
        ),
        sa.ForeignKeyConstraint(
            ["tag_id"], ["tags.id"], ondelete="CASCADE", name="fk_product_tags_tag_id_tags"
        ),
    )
    # product_id is covered by the primary key's leading column.
    op.create_index("ix_product_tags_tag_id", "product_tags", ["tag_id"])

    op.create_table(
        "variants",
        _id(),
        sa.Column("product_id", sa.BigInteger(), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("stock_qty", sa.Integer(), server_default="0", nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_variants"),
        sa.UniqueConstraint("sku", name="uq_variants_sku"),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            ondelete="CASCADE",
            name="fk_variants_product_id_products",
        ),
        sa.CheckConstraint("price_cents >= 0", name=op.f("ck_variants_price_cents_non_negative")),
        sa.CheckConstraint("stock_qty >= 0", name=op.f("ck_variants_stock_qty_non_negative")),
    )
    op.create_index("ix_variants_product_id", "variants", ["product_id"])

    op.create_table(
        "stock_reservations",
        _id(),
        sa.Column("variant_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("order_ref", sa.String(100), nullable=False),
        sa.Column("qty", sa.Integer(), nullable=False),
        sa.Column("status", reservation_status, server_default="active", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_stock_reservations"),
        sa.UniqueConstraint(
            "order_ref", "variant_id", name="uq_stock_reservations_order_ref_variant_id"
        ),
        sa.ForeignKeyConstraint(
            ["variant_id"],
            ["variants.id"],
            ondelete="CASCADE",
            name="fk_stock_reservations_variant_id_variants",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            ondelete="CASCADE",
            name="fk_stock_reservations_customer_id_customers",
        ),
        sa.CheckConstraint("qty > 0", name=op.f("ck_stock_reservations_qty_positive")),
    )
    op.create_index("ix_stock_reservations_variant_id", "stock_reservations", ["variant_id"])
    op.create_index("ix_stock_reservations_customer_id", "stock_reservations", ["customer_id"])
    op.create_index(
        "ix_stock_reservations_active_expires_at",
        "stock_reservations",
        ["expires_at"],
        postgresql_where=sa.text("status = 'active'"),
    )

    op.create_table(
        "orders",
        _id(),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("order_ref", sa.String(100), nullable=False),
        sa.Column("status", order_status, server_default="pending", nullable=False),
        sa.Column("total_cents", sa.Integer(), server_default="0", nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint("order_ref", name="uq_orders_order_ref"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            ondelete="RESTRICT",
            name="fk_orders_customer_id_customers",
        ),
        sa.CheckConstraint("total_cents >= 0", name=op.f("ck_orders_total_cents_non_negative")),
    )
    op.create_index("ix_orders_customer_id", "orders", ["customer_id"])
    op.create_index("ix_orders_status", "orders", ["status"])

    op.create_table(
        "order_items",
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("variant_id", sa.BigInteger(), nullable=False),
        sa.Column("qty", sa.Integer(), nullable=False),
        sa.Column("unit_price_cents", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "variant_id", name="pk_order_items"),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], ondelete="CASCADE", name="fk_order_items_order_id_orders"
        ),
        sa.ForeignKeyConstraint(
            ["variant_id"],
            ["variants.id"],
            ondelete="RESTRICT",
            name="fk_order_items_variant_id_variants",
        ),
        sa.CheckConstraint("qty > 0", name=op.f("ck_order_items_qty_positive")),
        sa.CheckConstraint(
            "unit_price_cents >= 0", name=op.f("ck_order_items_unit_price_cents_non_negative")
        ),
    )
    op.create_index("ix_order_items_variant_id", "order_items", ["variant_id"])

    op.execute(
        """
        CREATE FUNCTION harbordb_set_updated_at() RETURNS trigger
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
            "FOR EACH ROW EXECUTE FUNCTION harbordb_set_updated_at()"
        )


def downgrade() -> None:
    for table in (
        "order_items",
        "orders",
        "stock_reservations",
        "variants",
        "product_tags",
        "tags",
        "products",
        "customers",
    ):
        op.drop_table(table)  # indexes and triggers go with their table
    op.execute("DROP FUNCTION harbordb_set_updated_at()")
    order_status.drop(op.get_bind())
    reservation_status.drop(op.get_bind())
