"""Committed Harbor Commerce rows for tests whose code under test commits.

`Inventory`, the sweeper and anything else that opens its own units of work
cannot run inside a rolled-back test transaction: their rows must be committed
and removed afterwards. Everything seeded here is named after a `prefix`
(products ``"{prefix} …"``, SKUs, emails and order refs ``"{prefix}-…"``), and
`delete_seeded` removes it all, e.g. in an autouse fixture::

    @pytest.fixture(autouse=True)
    async def _delete_committed_rows(database: Database[CommerceWork]) -> AsyncIterator[None]:
        yield
        await delete_seeded(database, "checkout")
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from harbor_commerce.models import Customer, Order, Product, Variant
from harbor_commerce.uow import CommerceWork
from harbordb import Database


def new_order_ref(prefix: str) -> str:
    """A fresh order_ref that `delete_seeded(db, prefix)` removes."""
    return f"{prefix}-{uuid.uuid4().hex}"


async def seed_product(
    db: Database[CommerceWork],
    prefix: str,
    stocks: Sequence[int],
    *,
    price_cents: int = 100,
    archived: bool = False,
) -> Product:
    """A committed product with one variant per entry of `stocks`, in that order."""
    tag = uuid.uuid4().hex[:12]
    product = Product(
        name=f"{prefix} {tag}",
        archived_at=datetime.now(UTC) if archived else None,
        variants=[
            Variant(sku=f"{prefix}-{tag}-{i}", name=f"v{i}", price_cents=price_cents, stock_qty=n)
            for i, n in enumerate(stocks)
        ],
    )
    async with db.unit_of_work() as uow:
        await uow.products.add(product)
        await uow.commit()
    return product


async def seed_customer(db: Database[CommerceWork], prefix: str) -> Customer:
    """A committed customer with a fresh ``{prefix}-…@example.com`` email."""
    customer = Customer(email=f"{prefix}-{uuid.uuid4().hex}@example.com", name=f"{prefix} tester")
    async with db.unit_of_work() as uow:
        await uow.customers.add(customer)
        await uow.commit()
    return customer


async def delete_seeded(db: Database[CommerceWork], prefix: str) -> None:
    """Delete the orders, products (with their variants and reservations) and
    customers named after `prefix`, in one committed unit of work."""
    async with db.unit_of_work() as uow:
        await uow.orders.delete_where(Order.order_ref.startswith(f"{prefix}-"))
        await uow.products.delete_where(Product.name.startswith(f"{prefix} "))
        await uow.customers.delete_where(Customer.email.startswith(f"{prefix}-"))
        await uow.commit()
