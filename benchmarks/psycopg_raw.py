"""``psycopg-in``: raw psycopg 3 running the statements of ``asyncpg-in``.

The repository plan's shape: the parents, then ``= ANY(%s::bigint[])`` per
relationship (a server-side array bind: psycopg sends the list as one array
parameter), in one transaction, on one open connection with
``prepare_threshold=None``. Rows are psycopg's default tuples, read in its
default text format (what a user gets without asking for more); the key
columns are found by name in the cursor's description.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from benchmarks.core import Lab, Op

if TYPE_CHECKING:
    from psycopg import AsyncConnection, AsyncCursor


def _connection(lab: Lab) -> AsyncConnection[Any]:
    assert lab.psycopg is not None, "psycopg variants are built only when psycopg 3 is installed"
    return lab.psycopg.raw


def _at(cursor: AsyncCursor[Any], column: str) -> int:
    """The position of `column` in the cursor's rows (the first, when repeated)."""
    assert cursor.description is not None
    return next(i for i, c in enumerate(cursor.description) if c.name == column)


_PRODUCT = "SELECT * FROM products WHERE id = %s"
_PRODUCT_VARIANTS = (
    "SELECT * FROM variants WHERE product_id = ANY(%s::bigint[]) ORDER BY product_id, id"
)


def w1_in(lab: Lab) -> Op:
    """W1: one product, then its variants."""
    connection = _connection(lab)
    product_id = lab.dataset.product_id

    async def op() -> int:
        async with connection.transaction():
            cursor = await connection.execute(_PRODUCT, (product_id,))
            products = await cursor.fetchall()
            ids = [row[_at(cursor, "id")] for row in products]
            cursor = await connection.execute(_PRODUCT_VARIANTS, (ids,))
            variants = await cursor.fetchall()
        return len(products) + len(variants)

    return op


_PAGE = "SELECT * FROM products WHERE archived_at IS NULL ORDER BY name, id LIMIT %s"
_PAGE_VARIANTS = "SELECT * FROM variants WHERE product_id = ANY(%s::bigint[]) ORDER BY id"
_PAGE_TAGS = (
    "SELECT pt.product_id, t.* FROM product_tags pt JOIN tags t ON t.id = pt.tag_id "
    "WHERE pt.product_id = ANY(%s::bigint[])"
)


def w2_in(lab: Lab) -> Op:
    """W2: the page, then its variants and its tags."""
    connection = _connection(lab)
    page_size = lab.sizes.page_size

    async def op() -> int:
        async with connection.transaction():
            cursor = await connection.execute(_PAGE, (page_size,))
            products = await cursor.fetchall()
            at = _at(cursor, "id")
            ids = [row[at] for row in products]
            by_product: dict[int, list[Any]] = defaultdict(list)
            for statement in (_PAGE_VARIANTS, _PAGE_TAGS):
                cursor = await connection.execute(statement, (ids,))
                key = _at(cursor, "product_id")
                for row in await cursor.fetchall():
                    by_product[row[key]].append(row)
        return len(products) + sum(len(by_product[row[at]]) for row in products)

    return op


_CUSTOMER = "SELECT * FROM customers WHERE id = %s"
_CUSTOMER_ORDERS = "SELECT * FROM orders WHERE customer_id = ANY(%s::bigint[]) ORDER BY id"
_ORDER_ITEMS = """
SELECT i.*, v.*, p.*
  FROM order_items i
  JOIN variants v ON v.id = i.variant_id
  JOIN products p ON p.id = v.product_id
 WHERE i.order_id = ANY(%s::bigint[])
 ORDER BY i.order_id, i.variant_id
"""


def w3_in(lab: Lab) -> Op:
    """W3: the customer, its orders, then their items joined to variants and products."""
    connection = _connection(lab)
    customer_id = lab.dataset.customer_id

    async def op() -> int:
        async with connection.transaction():
            cursor = await connection.execute(_CUSTOMER, (customer_id,))
            customers = await cursor.fetchall()
            cursor = await connection.execute(
                _CUSTOMER_ORDERS, ([row[_at(cursor, "id")] for row in customers],)
            )
            orders = await cursor.fetchall()
            at = _at(cursor, "id")
            items: dict[int, list[Any]] = defaultdict(list)
            cursor = await connection.execute(_ORDER_ITEMS, ([row[at] for row in orders],))
            key = _at(cursor, "order_id")
            for row in await cursor.fetchall():
                items[row[key]].append(row)
        return len(customers) + sum(1 + 3 * len(items[row[at]]) for row in orders)

    return op


_FIRST_N = "SELECT * FROM customers WHERE id <= %s ORDER BY id"
_THEIR_ORDERS = (
    "SELECT * FROM orders WHERE customer_id = ANY(%s::bigint[]) ORDER BY customer_id, id"
)


def w4_in(lab: Lab, n: int) -> Op:
    """W4: customers 1..n, then their orders."""
    connection = _connection(lab)

    async def op() -> int:
        async with connection.transaction():
            cursor = await connection.execute(_FIRST_N, (n,))
            customers = await cursor.fetchall()
            at = _at(cursor, "id")
            orders: dict[int, list[Any]] = defaultdict(list)
            cursor = await connection.execute(_THEIR_ORDERS, ([row[at] for row in customers],))
            key = _at(cursor, "customer_id")
            for row in await cursor.fetchall():
                orders[row[key]].append(row)
        return len(customers) + sum(len(orders[row[at]]) for row in customers)

    return op
