"""W2's and W3's projections as msgspec Structs (`projection-struct`): the same fields,
tree and SQL as Harbor's `PRODUCT_CARDS` and `CUSTOMER_HISTORY`, built in C."""

from __future__ import annotations

from datetime import datetime

import msgspec

from harbor_commerce.models import Customer, Order, OrderItem, OrderStatus, Product, Tag, Variant
from harbordb import Projection, related


class VariantLineStruct(msgspec.Struct, frozen=True, gc=False):
    id: int
    sku: str
    name: str
    price_cents: int
    stock_qty: int


class ProductCardStruct(msgspec.Struct, frozen=True):
    id: int
    name: str
    variants: tuple[VariantLineStruct, ...]
    tags: tuple[str, ...]


class OrderLineStruct(msgspec.Struct, frozen=True, gc=False):
    variant_id: int
    sku: str
    variant_name: str
    product_id: int
    product_name: str
    qty: int
    unit_price_cents: int


class OrderViewStruct(msgspec.Struct, frozen=True):
    id: int
    order_ref: str
    status: OrderStatus
    total_cents: int
    created_at: datetime
    lines: tuple[OrderLineStruct, ...]


class CustomerHistoryStruct(msgspec.Struct, frozen=True):
    id: int
    email: str
    name: str
    orders: tuple[OrderViewStruct, ...]


LIVE_CARD_STRUCTS = Projection(
    ProductCardStruct,
    Product,
    variants=Projection(VariantLineStruct, Variant),
    tags=related(Product.tags, Tag.name, order_by=("name",)),
).where(lambda product: product.archived_at.is_(None))

HISTORY_STRUCTS = Projection(
    CustomerHistoryStruct,
    Customer,
    orders=related(
        Customer.orders,
        Projection(
            OrderViewStruct,
            Order,
            lines=related(
                Order.items,
                Projection(
                    OrderLineStruct,
                    OrderItem,
                    sku="variant.sku",
                    variant_name="variant.name",
                    product_id="variant.product_id",
                    product_name="variant.product.name",
                ),
            ),
        ),
        order_by=("-created_at", "-id"),
    ),
)
