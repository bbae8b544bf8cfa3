"""Behaviour no other test pinned down (each found by breaking the code on purpose):
the sweeper's SKIP LOCKED, and upserts on a two-column key or an explicit `on=`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from harbor_commerce.inventory import Inventory
from harbor_commerce.models import Customer, Product, ReservationStatus, StockReservation, Variant
from harbor_commerce.repositories import CustomerRepository, ReservationRepository
from harbor_commerce.sweeper import sweep_once
from harbordb import Database

SEED_PREFIX = "sweep"  # test_sweeper's seeding: conftest.py deletes those rows after each test


async def test_the_sweeper_skips_a_locked_reservation_instead_of_waiting(
    database: Database,
) -> None:
    from tests.harbor_commerce.test_sweeper import seed_expired, statuses

    _, prefix = await seed_expired(database, variants=2, reservations=5)
    # A short lock_timeout: waiting for the locked row would fail the round (Timeout)
    # and release nothing; SKIP LOCKED releases the four others at once.
    inventory = Inventory(database, lock_timeout=0.2)
    async with database.unit_of_work() as blocker:
        locked = select(StockReservation.id).where(StockReservation.order_ref == f"{prefix}0")
        await blocker.session.execute(locked.with_for_update())
        assert await sweep_once(inventory, batch_size=100) == 4
        assert await statuses(database, prefix) == {
            ReservationStatus.ACTIVE: 1,
            ReservationStatus.EXPIRED: 4,
        }
    assert await sweep_once(inventory, batch_size=100) == 1


async def _variant(session: AsyncSession) -> int:
    product = await session.scalar(insert(Product).values(name="upsert").returning(Product.id))
    values = {"product_id": product, "sku": uuid.uuid4().hex, "name": "v", "price_cents": 1}
    return int(await session.scalar(insert(Variant).values(**values).returning(Variant.id)))


async def test_upsert_on_the_two_column_key(session: AsyncSession) -> None:
    first, second = await _variant(session), await _variant(session)
    reservations = ReservationRepository(session)
    expires = datetime.now(UTC) + timedelta(minutes=5)
    ref = f"upsert-{uuid.uuid4().hex}"
    row = {"order_ref": ref, "variant_id": first, "qty": 1, "expires_at": expires}
    created = await reservations.upsert(row)
    updated = await reservations.upsert({**row, "qty": 3})  # same (order_ref, variant_id)
    other = await reservations.upsert({**row, "variant_id": second})  # same order_ref only
    assert updated.id == created.id
    assert updated.qty == 3
    assert other.id != created.id
    count = select(func.count()).where(StockReservation.order_ref == ref)
    assert await session.scalar(count) == 2


async def test_upsert_honours_a_valid_on_override(session: AsyncSession) -> None:
    customers = CustomerRepository(session)  # upsert_on = ("email",)
    original = await customers.upsert({"email": f"{uuid.uuid4().hex}@x.org", "name": "A"})
    renamed = f"{uuid.uuid4().hex}@x.org"
    moved = await customers.upsert({"id": original.id, "email": renamed, "name": "B"}, on=("id",))
    assert moved.id == original.id
    assert (moved.email, moved.name) == (renamed, "B")
    count = select(func.count()).where(Customer.id == original.id)
    assert await session.scalar(count) == 1
