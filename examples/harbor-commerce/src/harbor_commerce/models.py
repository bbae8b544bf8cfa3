"""The Harbor Commerce domain: catalog, stock reservations and orders.

Every relationship is ``lazy="raise"``: reach a relationship only through a
load plan (see `harbordb.Repository`), never by attribute access.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement

from harbordb.declarative import NAMING_CONVENTION, Timestamps, require_raise_loading


class Base(AsyncAttrs, DeclarativeBase):
    """Base of every Harbor Commerce model.

    `AsyncAttrs` is here so the N+1 detector has something to catch: its
    `awaitable_attrs` sidesteps `lazy="raise"` one parent row at a time.
    """

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _pk() -> Mapped[int]:
    return mapped_column(BigInteger, Identity(), primary_key=True)


class ReservationStatus(enum.StrEnum):
    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"
    CHECKED_OUT = "checked_out"


class OrderStatus(enum.StrEnum):
    PENDING = "pending"
    PAID = "paid"
    CANCELLED = "cancelled"


def _pg_enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, values_callable=lambda e: [m.value for m in e])


product_tags = Table(
    "product_tags",
    Base.metadata,
    Column(
        "product_id",
        BigInteger,
        ForeignKey("products.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "tag_id",
        BigInteger,
        ForeignKey("tags.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)


class Customer(Timestamps, Base):
    __tablename__ = "customers"

    id: Mapped[int] = _pk()
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))

    orders: Mapped[list[Order]] = relationship(back_populates="customer", lazy="raise")
    reservations: Mapped[list[StockReservation]] = relationship(
        back_populates="customer", lazy="raise"
    )


class Product(Timestamps, Base):
    __tablename__ = "products"

    id: Mapped[int] = _pk()
    name: Mapped[str] = mapped_column(String(200), index=True)
    description: Mapped[str] = mapped_column(Text, server_default="")
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    variants: Mapped[list[Variant]] = relationship(
        back_populates="product",
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Variant.id",
    )
    tags: Mapped[list[Tag]] = relationship(
        secondary=product_tags, back_populates="products", lazy="raise", passive_deletes=True
    )

    __table_args__ = (
        # The catalog lists live products; archived ones are kept for old orders.
        Index("ix_products_live", "id", postgresql_where="archived_at IS NULL"),
    )

    @hybrid_property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    @is_archived.inplace.expression
    @classmethod
    def _is_archived_expression(cls) -> ColumnElement[bool]:
        return cls.archived_at.is_not(None)


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = _pk()
    name: Mapped[str] = mapped_column(String(100), unique=True)

    products: Mapped[list[Product]] = relationship(
        secondary=product_tags, back_populates="tags", lazy="raise", passive_deletes=True
    )


class Variant(Timestamps, Base):
    __tablename__ = "variants"

    id: Mapped[int] = _pk()
    product_id: Mapped[int] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), index=True
    )
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    price_cents: Mapped[int] = mapped_column(Integer)
    stock_qty: Mapped[int] = mapped_column(Integer, server_default="0")

    product: Mapped[Product] = relationship(back_populates="variants", lazy="raise")
    reservations: Mapped[list[StockReservation]] = relationship(
        back_populates="variant", lazy="raise", passive_deletes=True
    )
    order_items: Mapped[list[OrderItem]] = relationship(back_populates="variant", lazy="raise")

    __table_args__ = (
        CheckConstraint("price_cents >= 0", name="price_cents_non_negative"),
        CheckConstraint("stock_qty >= 0", name="stock_qty_non_negative"),
    )

    @hybrid_property
    def in_stock(self) -> bool:
        return self.stock_qty > 0

    @in_stock.inplace.expression
    @classmethod
    def _in_stock_expression(cls) -> ColumnElement[bool]:
        return cls.stock_qty > 0


class StockReservation(Timestamps, Base):
    """Stock held for a checkout in progress, keyed by the caller's `order_ref`."""

    __tablename__ = "stock_reservations"

    id: Mapped[int] = _pk()
    variant_id: Mapped[int] = mapped_column(
        ForeignKey("variants.id", ondelete="CASCADE"), index=True
    )
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    order_ref: Mapped[str] = mapped_column(String(100))
    qty: Mapped[int] = mapped_column(Integer)
    status: Mapped[ReservationStatus] = mapped_column(
        _pg_enum(ReservationStatus, "reservation_status"),
        server_default=ReservationStatus.ACTIVE.value,
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    variant: Mapped[Variant] = relationship(back_populates="reservations", lazy="raise")
    customer: Mapped[Customer | None] = relationship(back_populates="reservations", lazy="raise")

    __table_args__ = (
        # One reservation per (order_ref, variant): retried requests find it.
        UniqueConstraint("order_ref", "variant_id"),
        CheckConstraint("qty > 0", name="qty_positive"),
        # The sweeper's scan: active reservations by expiry.
        Index(
            "ix_stock_reservations_active_expires_at",
            "expires_at",
            postgresql_where="status = 'active'",
        ),
    )


class Order(Timestamps, Base):
    __tablename__ = "orders"

    id: Mapped[int] = _pk()
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    order_ref: Mapped[str] = mapped_column(String(100), unique=True)
    status: Mapped[OrderStatus] = mapped_column(
        _pg_enum(OrderStatus, "order_status"),
        server_default=OrderStatus.PENDING.value,
        index=True,
    )
    total_cents: Mapped[int] = mapped_column(Integer, server_default="0")

    customer: Mapped[Customer] = relationship(back_populates="orders", lazy="raise")
    items: Mapped[list[OrderItem]] = relationship(
        back_populates="order",
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="OrderItem.variant_id",
    )

    __table_args__ = (
        CheckConstraint("total_cents >= 0", name="total_cents_non_negative"),
        # A customer's orders in id order (`Customer.orders`) straight from the index,
        # no sort after it (migration 0003).
        Index("ix_orders_customer_id_id", "customer_id", "id"),
    )


class OrderItem(Base):
    """A line of an order: the association object between `Order` and `Variant`."""

    __tablename__ = "order_items"

    order_id: Mapped[int] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True
    )
    variant_id: Mapped[int] = mapped_column(
        ForeignKey("variants.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    qty: Mapped[int] = mapped_column(Integer)
    unit_price_cents: Mapped[int] = mapped_column(Integer)

    order: Mapped[Order] = relationship(back_populates="items", lazy="raise")
    variant: Mapped[Variant] = relationship(back_populates="order_items", lazy="raise")

    __table_args__ = (
        CheckConstraint("qty > 0", name="qty_positive"),
        CheckConstraint("unit_price_cents >= 0", name="unit_price_cents_non_negative"),
    )


require_raise_loading(Base)
