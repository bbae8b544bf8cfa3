"""Read models: frozen, typed snapshots of hot reads, as `harbordb.Projection`s.

The repositories' ORM reads hydrate mapped objects (identity map, instance
state, collections), and on loopback that costs more than the SQL itself
(benchmarks/README.md). The read models here are slotted dataclasses holding
only what a catalog card or an order history shows, declared as projections:
harbordb compiles each read once into one statement (variants, tags, orders
and their lines as nested aggregates) and builds the objects straight from
the driver's rows, on the caller's unit of work's connection and transaction:
read-only mode, timeouts and row-level security apply, behind PgBouncer too.
Plain values, not in the session, unable to lazy-load, immutable: render with
them; change data through the ORM objects.

Use them through `ProductRepository.catalog_cards` and
`CustomerRepository.history`, or read `PRODUCT_CARDS` / `CUSTOMER_HISTORY`
directly in a unit of work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from harbor_commerce.models import Customer, Order, OrderItem, OrderStatus, Product, Tag, Variant
from harbordb import Projection, related


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


VARIANT_LINES = Projection(VariantLine, Variant)

PRODUCT_CARDS = Projection(
    ProductCard,
    Product,
    variants=VARIANT_LINES,  # Product.variants, by id
    tags=related(Product.tags, Tag.name, order_by=("name",)),
)

ORDER_LINES = Projection(
    OrderLine,
    OrderItem,
    sku="variant.sku",
    variant_name="variant.name",
    product_id="variant.product_id",
    product_name="variant.product.name",
)

CUSTOMER_HISTORY = Projection(
    CustomerHistory,
    Customer,
    orders=related(
        Customer.orders,
        Projection(OrderView, Order, lines=related(Order.items, ORDER_LINES)),
        order_by=("-created_at", "-id"),
    ),
)
