"""Tortoise ORM, the peer: initialised on the same database when it is installed."""

from __future__ import annotations

from contextlib import AsyncExitStack

from sqlalchemy import make_url

from benchmarks.core import Op
from harbordb.db import normalize_url

NOT_INSTALLED = (
    "Tortoise ORM is not installed, so the peer rows are missing from W2 and W3 "
    "(pip install 'harbordb[bench]')"
)


def installed() -> bool:
    try:
        import tortoise  # noqa: F401
    except ImportError:
        return False
    return True


async def start(url: str, stack: AsyncExitStack, notes: list[str]) -> bool:
    """Initialise Tortoise on `url`; close it when `stack` closes. False when not installed."""
    if not installed():
        notes.append(NOT_INSTALLED + ".")
        return False
    from tortoise import Tortoise

    parsed = make_url(normalize_url(url).render_as_string(hide_password=False))
    credentials = {
        "host": parsed.query.get("host") or parsed.host or "localhost",
        "port": int(parsed.query.get("port") or parsed.port or 5432),  # type: ignore[arg-type]
        "user": parsed.username or "postgres",
        "password": parsed.password or "",
        "database": parsed.database,
        # The same settings harbordb runs with: no statement cache (pooler-safe).
        "statement_cache_size": 0,
        "minsize": 1,
        "maxsize": 1,
    }
    await Tortoise.init(
        config={
            "connections": {
                "default": {"engine": "tortoise.backends.asyncpg", "credentials": credentials}
            },
            "apps": {"bench": {"models": ["benchmarks.tortoise_models"]}},
        }
    )
    stack.push_async_callback(Tortoise.close_connections)
    return True


def catalog_page(page_size: int) -> Op:
    """W2 in Tortoise: the page, then its variants and tags with `prefetch_related`."""
    from benchmarks.tortoise_models import TortoiseProduct

    async def op() -> int:
        products = await (
            TortoiseProduct.filter(archived_at=None)
            .order_by("name", "id")
            .limit(page_size)
            .prefetch_related("variants", "tags")
        )
        return sum(1 + len(p.variants) + len(p.tags) for p in products)

    return op


def customer_graph(customer_id: int) -> Op:
    """W3 in Tortoise: one customer, orders -> items -> variant -> product prefetched."""
    from benchmarks.tortoise_models import TortoiseCustomer

    async def op() -> int:
        customer = await TortoiseCustomer.get(id=customer_id).prefetch_related(
            "orders__items__variant__product"
        )
        loaded = 1
        for order in customer.orders:
            loaded += 1
            for item in order.items:
                loaded += 1 + (item.variant is not None) + (item.variant.product is not None)
        return loaded

    return op
