"""W3: a deep graph, one customer with orders -> items -> variant -> product.

Every variant returns 1 (customer) + orders + 3 per item (the item, its variant
and that variant's product), so each item's variant and product must be there.
The same-shape variants send what the repository's plan sends level by level
(its `get` nests them all into one statement): the customer, its orders, then
the items joined to their variants and products.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import joinedload, lazyload, selectinload, subqueryload

from benchmarks import named, peer, psycopg_peer, psycopg_raw
from benchmarks.core import Case, Lab, Op, Variant, Workload
from benchmarks.workloads.structs import HISTORY_STRUCTS
from harbor_commerce.models import Customer, Order, OrderItem, Product
from harbor_commerce.models import Variant as VariantModel
from harbor_commerce.readmodels import CUSTOMER_HISTORY

_CUSTOMERS = Customer.__table__
_ORDERS = Order.__table__
_ITEMS = OrderItem.__table__
_VARIANTS = VariantModel.__table__
_PRODUCTS = Product.__table__
PLAN = "orders.items.variant.product"


def _customer(lab: Lab) -> Select[Customer]:
    return select(Customer).where(Customer.id == lab.dataset.customer_id)


def _graph_size(customer: Customer) -> int:
    loaded = 1
    for order in customer.orders:
        loaded += 1
        for item in order.items:
            loaded += 1 + (item.variant is not None) + (item.variant.product is not None)
    return loaded


def nplus1(lab: Lab) -> Op:
    """Every level awaited one parent at a time; many-to-one loads of a variant or
    product already in the session's identity map send no query."""
    lazy = lazyload(Customer.orders).lazyload(Order.items)
    lazy = lazy.lazyload(OrderItem.variant).lazyload(VariantModel.product)

    async def op() -> int:
        async with lab.db.session() as session:
            customer = (await session.scalars(_customer(lab).options(lazy))).one()
            loaded = 1
            for order in await customer.awaitable_attrs.orders:
                loaded += 1
                for item in await order.awaitable_attrs.items:
                    variant = await item.awaitable_attrs.variant
                    product = await variant.awaitable_attrs.product
                    loaded += 1 + (variant is not None) + (product is not None)
            return loaded

    return op


def orm(lab: Lab, strategy: Any) -> Op:
    """The same strategy at every level of the path."""
    chain = strategy(Customer.orders)
    for attribute in (Order.items, OrderItem.variant, VariantModel.product):
        chain = getattr(chain, strategy.__name__)(attribute)
    statement = _customer(lab).options(chain)

    async def op() -> int:
        async with lab.db.session() as session:
            return _graph_size((await session.scalars(statement)).unique().one())

    return op


def repository(lab: Lab) -> Op:
    async def op() -> int:
        async with lab.db.unit_of_work() as uow:
            return _graph_size(await uow.customers.get(lab.dataset.customer_id, load=(PLAN,)))

    return op


def repository_view(lab: Lab) -> Op:
    """`CustomerRepository.history`: read-only dataclasses from Core rows. Each order
    line carries its variant's and product's columns, so it counts as three."""

    async def op() -> int:
        async with lab.db.unit_of_work() as uow:
            history = await uow.customers.history(lab.dataset.customer_id)
            return 1 + sum(1 + 3 * len(order.lines) for order in history.orders)

    return op


def core_in(lab: Lab) -> Op:
    parent = select(_CUSTOMERS).where(_CUSTOMERS.c.id == lab.dataset.customer_id)
    item_rows = (
        select(_ITEMS, _VARIANTS, _PRODUCTS)
        .join(_VARIANTS, _VARIANTS.c.id == _ITEMS.c.variant_id)
        .join(_PRODUCTS, _PRODUCTS.c.id == _VARIANTS.c.product_id)
        .order_by(_ITEMS.c.order_id, _ITEMS.c.variant_id)
    )

    async def op() -> int:
        async with lab.db.engine.connect() as connection:
            customers = (await connection.execute(parent)).all()
            orders = (
                await connection.execute(
                    select(_ORDERS)
                    .where(_ORDERS.c.customer_id.in_([row.id for row in customers]))
                    .order_by(_ORDERS.c.id)
                )
            ).all()
            items: dict[int, list[Any]] = defaultdict(list)
            ids = [row.id for row in orders]
            for row in await connection.execute(item_rows.where(_ITEMS.c.order_id.in_(ids))):
                items[row.order_id].append(row)
        return len(customers) + sum(1 + 3 * len(items[row.id]) for row in orders)

    return op


_ITEMS_SQL = """
SELECT i.*, v.*, p.*
  FROM order_items i
  JOIN variants v ON v.id = i.variant_id
  JOIN products p ON p.id = v.product_id
 WHERE i.order_id = ANY($1::bigint[])
 ORDER BY i.order_id, i.variant_id
"""


def _w3_raw(lab: Lab, customer: str, orders: str, items: str) -> Op:
    """Raw asyncpg in one transaction: the customer, its orders, then their items joined
    to variants and products, each with the level above's ids as one array parameter."""

    async def op() -> int:
        async with lab.raw.transaction():
            customers = await lab.raw.fetch(customer, lab.dataset.customer_id)
            found = await lab.raw.fetch(orders, [row["id"] for row in customers])
            by_order: dict[int, list[Any]] = defaultdict(list)
            for row in await lab.raw.fetch(items, [row["id"] for row in found]):
                by_order[row["order_id"]].append(row)
        return len(customers) + sum(1 + 3 * len(by_order[row["id"]]) for row in found)

    return op


def asyncpg_in(lab: Lab) -> Op:
    return _w3_raw(
        lab,
        "SELECT * FROM customers WHERE id = $1",
        "SELECT * FROM orders WHERE customer_id = ANY($1::bigint[]) ORDER BY id",
        _ITEMS_SQL,
    )


_JSON = """
SELECT c.*,
       (SELECT coalesce(json_agg(json_build_object(
                   'order', o,
                   'items', (SELECT coalesce(json_agg(
                                     json_build_object('item', i, 'variant', v, 'product', p)
                                     ORDER BY i.variant_id), '[]')
                               FROM order_items i
                               JOIN variants v ON v.id = i.variant_id
                               JOIN products p ON p.id = v.product_id
                              WHERE i.order_id = o.id)
               ) ORDER BY o.id), '[]')
          FROM orders o WHERE o.customer_id = c.id) AS orders
  FROM customers c
 WHERE c.id = $1
"""


def asyncpg_json(lab: Lab) -> Op:
    async def op() -> int:
        row = await lab.raw.fetchrow(_JSON, lab.dataset.customer_id)
        loaded = 1
        for order in json.loads(row["orders"]):
            loaded += 1
            for item in order["items"]:
                loaded += 1 + (item["variant"] is not None) + (item["product"] is not None)
        return loaded

    return op


def projection(lab: Lab, *, structs: bool = False) -> Op:
    """`CUSTOMER_HISTORY` (`harbordb.Projection`) in a unit of work: one statement (`get`
    nests); `structs`: the same as msgspec Structs."""
    read = HISTORY_STRUCTS if structs else CUSTOMER_HISTORY

    async def op() -> int:
        async with lab.db.unit_of_work() as uow:
            history = await read.get(uow, lab.dataset.customer_id)
            assert history is not None
            return 1 + sum(1 + 3 * len(order.lines) for order in history.orders)

    return op


_ITEMS_COLS_SQL = """
SELECT i.order_id, i.variant_id, v.sku, v.name, v.product_id, p.name, i.qty, i.unit_price_cents
  FROM order_items i
  JOIN variants v ON v.id = i.variant_id
  JOIN products p ON p.id = v.product_id
 WHERE i.order_id = ANY($1::bigint[])
 ORDER BY i.order_id, i.variant_id
"""


def asyncpg_in_cols(lab: Lab) -> Op:
    """`asyncpg-in` reading only the columns the history shows (as the projections do)."""
    return _w3_raw(
        lab,
        "SELECT id, email, name FROM customers WHERE id = $1",
        "SELECT id, order_ref, status, total_cents, created_at FROM orders "
        "WHERE customer_id = ANY($1::bigint[]) ORDER BY created_at DESC, id DESC",
        _ITEMS_COLS_SQL,
    )


_ONE = """
SELECT c.id, c.email, c.name,
       (SELECT array_agg(ROW(o.id, o.order_ref, o.status::text, o.total_cents, o.created_at,
                (SELECT array_agg(ROW(i.variant_id, v.sku, v.name, v.product_id, p.name, i.qty,
                                      i.unit_price_cents) ORDER BY i.variant_id)
                   FROM order_items i
                   LEFT JOIN variants v ON v.id = i.variant_id
                   LEFT JOIN products p ON p.id = v.product_id
                  WHERE i.order_id = o.id)) ORDER BY o.created_at DESC, o.id DESC)
          FROM orders o WHERE o.customer_id = c.id) AS orders
  FROM customers c
 WHERE c.id = $1
"""


def asyncpg_one(lab: Lab) -> Op:
    """Raw asyncpg, one statement with nested array_agg(ROW(...)): the projection's shape."""

    async def op() -> int:
        row = await lab.raw.fetchrow(_ONE, lab.dataset.customer_id)
        return 1 + sum(1 + 3 * len(order[5] or ()) for order in row["orders"] or ())

    return op


async def _cases(lab: Lab) -> list[Case]:
    variants = [
        Variant("n+1", nplus1(lab)),
        Variant("selectinload", orm(lab, selectinload)),
        Variant("joinedload", orm(lab, joinedload)),
        Variant("subqueryload", orm(lab, subqueryload)),
        Variant("repository", repository(lab)),
        Variant("repository-view", repository_view(lab)),
        Variant("core-in", core_in(lab)),
        Variant("projection", projection(lab)),
        Variant("projection-struct", projection(lab, structs=True)),
        Variant("asyncpg-in", asyncpg_in(lab)),
        Variant("asyncpg-in-cols", asyncpg_in_cols(lab)),
        Variant("asyncpg-one", asyncpg_one(lab)),
        Variant("asyncpg-json", asyncpg_json(lab)),
    ]
    case = Case(f"customer {lab.dataset.customer_id}", {}, variants)
    await named.add_variants(
        lab, case, {"repository": repository, "projection": projection, "asyncpg-in": asyncpg_in}
    )
    if lab.tortoise:
        case.variants.append(Variant("tortoise", peer.customer_graph(lab.dataset.customer_id)))
    else:
        case.skipped["tortoise"] = "Tortoise ORM not installed"
    psycopg_peer.add(case, lab, lambda on: orm(on, selectinload), core_in, psycopg_raw.w3_in)
    return [case]


W3 = Workload(
    key="W3",
    title="a deep graph: customer -> orders -> items -> variant -> product",
    description=(
        "One customer with 5 orders of 3 items, each item with its variant and the "
        "variant's product (four levels)."
    ),
    unit="op",
    floor="asyncpg-json",
    build=_cases,
)
