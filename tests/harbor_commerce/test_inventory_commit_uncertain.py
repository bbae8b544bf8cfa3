"""After `CommitUncertain`, calling the inventory again with the same order_ref is safe.

A deferred trigger makes COMMIT sleep for reservations whose order_ref starts
with "slowcommit"; the caller is cancelled during that COMMIT, and gets
`CommitUncertain`. Reserving again with the same order_ref returns the one
reservation (whether or not the first commit happened) and never takes the
stock twice; checking out again returns the one order.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import anyio
import pytest
from sqlalchemy import text

from harbor_commerce.inventory import Inventory
from harbor_commerce.seed import seed_customer, seed_product
from harbordb import CommitUncertain, Database

SEED_PREFIX = "slowcommit"  # committed rows: conftest.py deletes rows seeded under it

TRIGGER = (
    "CREATE FUNCTION slow_reservation_commit() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN IF starts_with(NEW.order_ref, 'slowcommit') THEN PERFORM pg_sleep(1); END IF; "
    "RETURN NULL; END $$",
    "CREATE CONSTRAINT TRIGGER slow_reservation_commit AFTER INSERT OR UPDATE "
    "ON stock_reservations DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
    "EXECUTE FUNCTION slow_reservation_commit()",
)


@pytest.fixture(scope="module")
async def slow_commits(database: Database) -> AsyncIterator[None]:
    async with database.engine.begin() as connection:
        for statement in TRIGGER:
            await connection.execute(text(statement))
    yield
    async with database.engine.begin() as connection:
        await connection.execute(text("DROP TRIGGER slow_reservation_commit ON stock_reservations"))
        await connection.execute(text("DROP FUNCTION slow_reservation_commit()"))


async def _cancelled_during_commit(
    database: Database, call: Callable[[], Awaitable[object]]
) -> BaseException | None:
    """Run ``await call()`` and cancel it while its COMMIT sleeps; what it raised."""
    raised: list[BaseException] = []

    async def run() -> None:
        try:
            await call()
        except CommitUncertain as exc:
            raised.append(exc)

    query = text(
        "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query ILIKE 'COMMIT%'"
    )
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
        with anyio.fail_after(10):
            while True:
                async with database.engine.connect() as admin:
                    if (await admin.execute(query)).first() is not None:
                        break
                await anyio.sleep(0.01)
        tasks.cancel_scope.cancel()
    return raised[0] if raised else None


@pytest.mark.usefixtures("slow_commits")
async def test_reserve_and_checkout_again_after_commit_uncertain(db: Database) -> None:
    product = await seed_product(db, SEED_PREFIX, [10])
    variant = product.variants[0].id
    customer = await seed_customer(db, SEED_PREFIX)
    inventory = Inventory(db)
    order_ref = f"{SEED_PREFIX}-{uuid.uuid4().hex}"

    error = await _cancelled_during_commit(db, partial(inventory.reserve, variant, 3, order_ref))
    assert isinstance(error, CommitUncertain)
    again = await inventory.reserve(variant, 3, order_ref)  # safe: idempotent per order_ref
    also = await inventory.reserve(variant, 3, order_ref)
    assert also.id == again.id
    assert also.created is False
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.variants.get(variant, load=())).stock_qty == 7  # taken once

    error = await _cancelled_during_commit(db, partial(inventory.checkout, order_ref, customer.id))
    assert isinstance(error, CommitUncertain)
    order = await inventory.checkout(order_ref, customer.id)
    assert (await inventory.checkout(order_ref, customer.id)).id == order.id
    assert [item.qty for item in order.items] == [3]
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.variants.get(variant, load=())).stock_qty == 7
