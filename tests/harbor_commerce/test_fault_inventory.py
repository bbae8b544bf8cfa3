"""64 tasks reserve, release, check out and expire for a bounded time, directly and
through PgBouncer: stock + held stock = initial stock at every sample and at the end.

Held stock is what active and checked-out reservations hold (checkout keeps the
units out of stock; release and expiry give them back). Samples are taken in
one REPEATABLE READ snapshot while the load runs. The only errors allowed are
the inventory's business refusals.
"""

from __future__ import annotations

import random
from collections import Counter

import anyio
import anyio.lowlevel
from sqlalchemy import func, select

from harbor_commerce.inventory import (
    CheckoutFailed,
    InsufficientStock,
    Inventory,
    ReservationExpired,
)
from harbor_commerce.models import ReservationStatus, StockReservation, Variant
from harbor_commerce.seed import new_order_ref, seed_customer, seed_product
from harbordb import CommitUncertain, Database, NotFound

SEED_PREFIX = "finv"  # committed rows: conftest.py deletes rows seeded under it
TASKS, SECONDS, STOCK = 64, 4.0, 40
BUSINESS = (InsufficientStock, ReservationExpired, CheckoutFailed, NotFound)


async def _sample(db: Database, variant_ids: list[int]) -> dict[int, int]:
    """variant id -> stock + held, in one snapshot."""
    held_statuses = (ReservationStatus.ACTIVE, ReservationStatus.CHECKED_OUT)
    held = (
        select(func.coalesce(func.sum(StockReservation.qty), 0))
        .where(StockReservation.variant_id == Variant.id)
        .where(StockReservation.status.in_(held_statuses))
        .scalar_subquery()
    )
    query = select(Variant.id, Variant.stock_qty + held).where(Variant.id.in_(variant_ids))
    async with db.unit_of_work(read_only=True, isolation_level="REPEATABLE READ") as uow:
        return {row[0]: int(row[1]) for row in (await uow.session.execute(query)).all()}


async def test_64_tasks_keep_stock_plus_held_equal_to_the_initial_stock(db: Database) -> None:
    product = await seed_product(db, SEED_PREFIX, [STOCK, STOCK, STOCK])
    variant_ids = [variant.id for variant in product.variants]
    customer = await seed_customer(db, SEED_PREFIX)
    inventory = Inventory(db)
    outcomes: Counter[str] = Counter()
    unexpected: list[BaseException] = []
    samples: list[dict[int, int]] = []
    rng = random.Random(64)

    async def worker() -> None:
        while True:
            ref = new_order_ref(SEED_PREFIX)
            try:
                reservation = await inventory.reserve(
                    rng.choice(variant_ids), rng.randint(1, 3), ref, ttl=rng.choice([1, 30])
                )
                outcomes["reserved"] += 1
                action = rng.random()
                if action < 0.4:
                    await inventory.release(reservation.id)
                    outcomes["released"] += 1
                elif action < 0.8:
                    await inventory.checkout(ref, customer.id)
                    outcomes["checked out"] += 1
                else:
                    outcomes["left to expire"] += 1
                if rng.random() < 0.05:
                    outcomes["expired"] += await inventory.release_expired(batch_size=50)
            except BUSINESS as exc:
                outcomes[type(exc).__name__] += 1
            except CommitUncertain:
                # Only when the test's time is up: cancelled during COMMIT. Committed
                # or not, the transaction is whole, so the invariant holds either way.
                outcomes["CommitUncertain at the end"] += 1
            except Exception as exc:
                unexpected.append(exc)
            await anyio.lowlevel.checkpoint()

    async def sampler() -> None:
        while True:
            samples.append(await _sample(db, variant_ids))
            await anyio.sleep(0.1)

    with anyio.move_on_after(SECONDS):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sampler)
            for _ in range(TASKS):
                tasks.start_soon(worker)
    await inventory.release_expired(batch_size=10_000)
    samples.append(await _sample(db, variant_ids))
    assert unexpected == []
    assert outcomes["reserved"] > 0
    assert len(samples) > 1
    assert all(sample == dict.fromkeys(variant_ids, STOCK) for sample in samples), samples
    print(f"\nFAULT inventory 64 tasks: {dict(outcomes)}; {len(samples)} samples, all balanced")
