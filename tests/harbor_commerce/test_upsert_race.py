"""Concurrent upserts: committed transactions racing on the same keys.

Each task has its own session and commits, directly and through PgBouncer.
Keys are unique per run, and the rows are deleted afterwards.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from harbor_commerce.models import Customer, Product, Variant
from harbor_commerce.repositories import CustomerRepository, ProductRepository, VariantRepository
from harbordb import Database

TASKS = 50


@pytest.fixture
async def product_id(db: Database) -> AsyncIterator[int]:
    """A committed product for variants to hang off; deleting it cascades to them."""
    async with db.session() as session, session.begin():
        product = await ProductRepository(session).add(Product(name=f"race-{uuid.uuid4().hex}"))
    yield product.id
    async with db.session() as session, session.begin():
        await ProductRepository(session).delete(product.id)


async def race(
    db: Database, tasks: int, work: Callable[[AsyncSession, int], Awaitable[Any]]
) -> list[Any]:
    """Run `work` in `tasks` concurrent transactions released at once; each commits."""
    start = anyio.Event()
    results: list[Any] = []

    async def one(number: int) -> None:
        await start.wait()
        async with db.session() as session, session.begin():
            results.append(await work(session, number))

    async with anyio.create_task_group() as group:  # any error fails the test
        for number in range(tasks):
            group.start_soon(one, number)
        await anyio.lowlevel.checkpoint()
        start.set()
    return results


async def test_concurrent_upserts_of_one_key_leave_one_row(db: Database) -> None:
    email = f"race-{uuid.uuid4().hex}@example.com"

    async def upsert(session: AsyncSession, number: int) -> tuple[int, str]:
        customer = await CustomerRepository(session).upsert({"email": email, "name": f"n{number}"})
        return customer.id, customer.name

    try:
        results = await race(db, TASKS, upsert)
        assert len(results) == TASKS
        assert len({customer_id for customer_id, _ in results}) == 1
        async with db.session() as session:
            customers = CustomerRepository(session)
            assert await customers.count(email=email) == 1
            (row,) = await customers.list(email=email)
        assert row.name in {name for _, name in results}  # the last committed write wins
    finally:
        async with db.session() as session, session.begin():
            await CustomerRepository(session).delete_where(Customer.email == email)


async def test_concurrent_insert_or_get_returns_the_first_row(
    db: Database, product_id: int
) -> None:
    sku = f"race-{uuid.uuid4().hex}"

    async def insert_or_get(session: AsyncSession, number: int) -> tuple[int, int]:
        row = {"product_id": product_id, "sku": sku, "name": "v", "price_cents": number}
        variant = await VariantRepository(session).upsert(row, update=())
        return variant.id, variant.price_cents

    results = await race(db, TASKS, insert_or_get)
    assert len(set(results)) == 1  # every task got the same row, unchanged
    async with db.session() as session:
        (variant,) = await VariantRepository(session).list(sku=sku)
    assert (variant.id, variant.price_cents) == results[0]


async def test_concurrent_batches_over_shuffled_keys_neither_deadlock_nor_duplicate(
    db: Database, product_id: int
) -> None:
    prefix = f"race-{uuid.uuid4().hex[:12]}"
    skus = [f"{prefix}-{i:02d}" for i in range(30)]

    async def batch(session: AsyncSession, number: int) -> int:
        order = random.Random(number).sample(skus, len(skus))
        rows = [
            {"product_id": product_id, "sku": sku, "name": f"n{number}", "price_cents": number}
            for sku in order
        ]
        upserted = await VariantRepository(session).upsert_many(rows)
        assert [v.sku for v in upserted] == order
        return len(upserted)

    assert await race(db, 20, batch) == [30] * 20
    async with db.session() as session:
        variants = VariantRepository(session)
        assert await variants.count(Variant.sku.startswith(prefix)) == 30
