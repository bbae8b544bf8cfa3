"""Read models: frozen, typed snapshots of hot reads, built from Core rows.

The repositories' ORM reads hydrate mapped objects (identity map, instance
state, collections), and on loopback that costs more than the SQL itself
(benchmarks/README.md). The read models here select only the columns they
show, with SQLAlchemy Core, in as many statements as the ORM load plan, and
build slotted dataclasses: plain values, not in the session, unable to
lazy-load, immutable. Render with them; change data through the ORM objects.

Every statement is built once, at import, with bind parameters, so SQLAlchemy
derives its cache key once rather than per call. A child query takes all its
parents' keys as one array parameter (``= ANY($1::BIGINT[])``, as
`harbordb.repository.any_of`), so its SQL is the same for 5 parents and for
500. The statements run on the caller's session, in its transaction: a unit of
work's read-only mode, timeouts and row-level security apply, behind PgBouncer
too. The functions are synchronous, for ``session.run_sync``: a read's
statements then share one greenlet instead of one each.

Use them through `ProductRepository.catalog_cards` and
`CustomerRepository.history`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from harbor_commerce.models import Customer, Order, OrderItem, OrderStatus, Product, Tag, Variant
from harbor_commerce.models import product_tags as _product_tags

_products = Product.__table__
_variants = Variant.__table__
_tags = Tag.__table__
_customers = Customer.__table__
_orders = Order.__table__
_items = OrderItem.__table__


@dataclass(frozen=True, slots=True)
class VariantLine:
    """A variant (SKU) as the catalog shows it."""

    id: int
    sku: str
    name: str
    price_cents: int
    stock_qty: int

    @property
    def in_stock(self) -> bool:
        return self.stock_qty > 0


@dataclass(frozen=True, slots=True)
class ProductCard:
    """A product on a catalog page: its variants by id, its tag names alphabetically."""

    id: int
    name: str
    variants: tuple[VariantLine, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OrderLine:
    """An order item with what it bought: the variant and the variant's product."""

    variant_id: int
    sku: str
    variant_name: str
    product_id: int
    product_name: str
    qty: int
    unit_price_cents: int


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order with its lines, by variant id (as `Order.items`)."""

    id: int
    order_ref: str
    status: OrderStatus
    total_cents: int
    created_at: datetime
    lines: tuple[OrderLine, ...]


@dataclass(frozen=True, slots=True)
class CustomerHistory:
    """A customer with every order, newest first (then by id, descending)."""

    id: int
    email: str
    name: str
    orders: tuple[OrderView, ...]


def _in_keys(column: ColumnElement[int]) -> ColumnElement[bool]:
    """``column = ANY($1::BIGINT[])``: all the parents' keys in one array parameter, `:keys`."""
    return column == any_(bindparam("keys", type_=ARRAY(BigInteger)))


# Columns come in the field order of the dataclass they fill, after the parent's key.
_VARIANT_LINES = (
    select(
        _variants.c.product_id,
        _variants.c.id,
        _variants.c.sku,
        _variants.c.name,
        _variants.c.price_cents,
        _variants.c.stock_qty,
    )
    .where(_in_keys(_variants.c.product_id))
    .order_by(_variants.c.id)
)

_TAG_NAMES = (
    select(_product_tags.c.product_id, _tags.c.name)
    .join(_tags, _tags.c.id == _product_tags.c.tag_id)
    .where(_in_keys(_product_tags.c.product_id))
    .order_by(_tags.c.name)
)

_CUSTOMER = select(_customers.c.id, _customers.c.email, _customers.c.name).where(
    _customers.c.id == bindparam("customer_id")
)

_ORDERS = (
    select(
        _orders.c.id,
        _orders.c.order_ref,
        _orders.c.status,
        _orders.c.total_cents,
        _orders.c.created_at,
    )
    .where(_orders.c.customer_id == bindparam("customer_id"))
    .order_by(_orders.c.created_at.desc(), _orders.c.id.desc())
)

_ORDER_LINES = (
    select(
        _items.c.order_id,
        _items.c.variant_id,
        _variants.c.sku,
        _variants.c.name,
        _variants.c.product_id,
        _products.c.name,
        _items.c.qty,
        _items.c.unit_price_cents,
    )
    .join(_variants, _variants.c.id == _items.c.variant_id)
    .join(_products, _products.c.id == _variants.c.product_id)
    .where(_in_keys(_items.c.order_id))
    .order_by(_items.c.order_id, _items.c.variant_id)
)


def _rows(session: Session, statement: Select[Any], **params: Any) -> Sequence[Any]:
    rows: Sequence[Any] = session.connection().execute(statement, params).all()
    return rows


def product_cards(session: Session, products: Sequence[Row[Any]]) -> tuple[ProductCard, ...]:
    """Cards for these product rows (``id``, ``name``), in their order: two
    statements (variants, tags), none for no products.

    The `harbordb.repository.RowBuilder` of `ProductRepository.catalog_cards`.
    """
    if not products:
        return ()
    keys = [product.id for product in products]
    variants: dict[int, list[VariantLine]] = {id: [] for id in keys}
    tags: dict[int, list[str]] = {id: [] for id in keys}
    for row in _rows(session, _VARIANT_LINES, keys=keys):
        variants[row[0]].append(VariantLine(*row[1:]))
    for product_id, tag in _rows(session, _TAG_NAMES, keys=keys):
        tags[product_id].append(tag)
    return tuple(
        ProductCard(p.id, p.name, tuple(variants[p.id]), tuple(tags[p.id])) for p in products
    )


def customer_history(session: Session, customer_id: int) -> CustomerHistory | None:
    """One customer's orders with their lines, or None when no such customer is visible.

    Three statements (customer, orders, lines joined to variants and products),
    as the ORM plan ``orders.items.variant.product``; two when there is no order.
    """
    found = _rows(session, _CUSTOMER, customer_id=customer_id)
    if not found:
        return None
    customer = found[0]
    orders = _rows(session, _ORDERS, customer_id=customer.id)
    lines: dict[int, list[OrderLine]] = {order.id: [] for order in orders}
    if lines:
        for row in _rows(session, _ORDER_LINES, keys=list(lines)):
            lines[row[0]].append(OrderLine(*row[1:]))
    return CustomerHistory(
        customer.id,
        customer.email,
        customer.name,
        tuple(
            OrderView(
                order.id,
                order.order_ref,
                order.status,
                order.total_cents,
                order.created_at,
                tuple(lines[order.id]),
            )
            for order in orders
        ),
    )
