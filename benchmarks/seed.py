"""Deterministic Harbor Commerce data, written with COPY.

The same seed gives the same rows, ids included: ids are assigned here (the
identity columns are ``BY DEFAULT``) and each sequence is moved past them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from benchmarks.options import Sizes
from benchmarks.servers import BenchError

_TABLES = (
    "order_items",
    "orders",
    "stock_reservations",
    "product_tags",
    "variants",
    "tags",
    "products",
    "customers",
)
_WORDS = ("harbor", "anchor", "brass", "canvas", "cedar", "copper", "drift", "ember", "fjord",
          "granite", "indigo", "juniper", "lantern", "maple", "marine", "nautical", "oak",
          "pebble", "quay", "rope", "saffron", "slate", "tide", "walnut")  # fmt: skip
TAGS = 50
VARIANTS_PER_PRODUCT = 4
TAGS_PER_PRODUCT = 3
ARCHIVED_SHARE = 0.05
_STATUSES = ("pending", "paid", "paid", "paid", "cancelled")


@dataclass(frozen=True)
class Dataset:
    """What was seeded, and the fixed targets each workload reads."""

    seed: int
    counts: dict[str, int]
    product_id: int  # W1: a live product
    catalog_after: int  # W2: the page is the live products with id > this, by id
    customer_id: int  # W3: the customer whose order graph is loaded
    max_customer_id: int  # W4 loads customers 1..N; W5 deletes ids above this


class SeedError(BenchError):
    """The data cannot be seeded as asked."""


async def ensure_empty(connection: Any) -> None:
    """Refuse to seed over existing rows: the bench would mix its data with them."""
    for table in _TABLES:
        if await connection.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            raise SeedError(
                f"table {table} already has rows; the bench needs an empty harbordb schema "
                "(point --database-url at an empty database)"
            )


async def empty(connection: Any) -> None:
    """Remove everything the bench wrote (it refused to start on a non-empty schema)."""
    await connection.execute(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY")


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(count))


async def seed(connection: Any, sizes: Sizes, seed: int) -> Dataset:
    """Generate and COPY the whole dataset over one asyncpg connection."""
    rng = random.Random(seed)
    products, archived = [], set()
    for pid in range(1, sizes.products + 1):
        if rng.random() < ARCHIVED_SHARE:
            archived.add(pid)
        products.append((pid, _words(rng, 3).title(), _words(rng, 12)))
    variants, prices = [], {}
    for pid in range(1, sizes.products + 1):
        for k in range(VARIANTS_PER_PRODUCT):
            vid = (pid - 1) * VARIANTS_PER_PRODUCT + k + 1
            prices[vid] = rng.randrange(100, 100_000)
            stock = rng.randrange(0, 200)
            variants.append((vid, pid, f"SKU-{pid:06d}-{k}", f"Size {k + 1}", prices[vid], stock))
    tags = [(tid, f"tag-{tid:02d}-{rng.choice(_WORDS)}") for tid in range(1, TAGS + 1)]
    product_tags = [
        (pid, tid)
        for pid in range(1, sizes.products + 1)
        for tid in sorted(rng.sample(range(1, TAGS + 1), TAGS_PER_PRODUCT))
    ]
    customers = [
        (cid, f"customer{cid}@harbor.example", _words(rng, 2).title())
        for cid in range(1, sizes.customers + 1)
    ]
    orders: list[tuple[int, int, str, str, int]] = []
    items: list[tuple[int, int, int, int]] = []
    variant_count = len(variants)
    for cid in range(1, sizes.customers + 1):
        for _ in range(sizes.orders_per_customer):
            oid = len(orders) + 1
            total = 0
            for vid in sorted(rng.sample(range(1, variant_count + 1), sizes.items_per_order)):
                qty = rng.randrange(1, 5)
                items.append((oid, vid, qty, prices[vid]))
                total += qty * prices[vid]
            orders.append((oid, cid, f"ORD-{oid:08d}", rng.choice(_STATUSES), total))

    async with connection.transaction():
        await _copy(connection, "products", ["id", "name", "description"], products)
        await connection.execute(
            "UPDATE products SET archived_at = now() WHERE id = ANY($1::bigint[])", list(archived)
        )
        await _copy(
            connection,
            "variants",
            ["id", "product_id", "sku", "name", "price_cents", "stock_qty"],
            variants,
        )
        await _copy(connection, "tags", ["id", "name"], tags)
        await _copy(connection, "product_tags", ["product_id", "tag_id"], product_tags)
        await _copy(connection, "customers", ["id", "email", "name"], customers)
        await _copy(
            connection,
            "orders",
            ["id", "customer_id", "order_ref", "status", "total_cents"],
            orders,
        )
        await _copy(
            connection, "order_items", ["order_id", "variant_id", "qty", "unit_price_cents"], items
        )
        for table in ("products", "variants", "tags", "customers", "orders"):
            await connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
    await connection.execute("VACUUM ANALYZE")

    live = [pid for pid in range(1, sizes.products + 1) if pid not in archived]
    after = live[len(live) // 4] if len(live) >= 4 * sizes.page_size // 3 else 0
    if sum(1 for pid in live if pid > after) < sizes.page_size:
        raise SeedError(f"{sizes.products} products leave fewer than {sizes.page_size} live ones")
    return Dataset(
        seed=seed,
        counts={
            "products": len(products),
            "archived_products": len(archived),
            "variants": len(variants),
            "tags": len(tags),
            "product_tags": len(product_tags),
            "customers": len(customers),
            "orders": len(orders),
            "order_items": len(items),
        },
        product_id=live[len(live) // 2],
        catalog_after=after,
        customer_id=(sizes.customers + 1) // 2,
        max_customer_id=sizes.customers,
    )


async def _copy(connection: Any, table: str, columns: list[str], rows: list[Any]) -> None:
    await connection.copy_records_to_table(table, records=rows, columns=columns)
