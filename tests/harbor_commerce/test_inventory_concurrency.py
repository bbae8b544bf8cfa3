"""Reservations under concurrency: never oversold, never reserved twice, directly and
through PgBouncer (transaction mode, 4 server connections).

Each task runs its own committed units of work; variants and order_refs are unique
per test. Task groups fail the test on any error not explicitly expected.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest
from sqlalchemy import case, func, select, text, update

from harbor_commerce.inventory import InsufficientStock, Inventory, Reservation, ReservationExpired
from harbor_commerce.models import OrderItem, ReservationStatus, StockReservation, Variant
from harbor_commerce.seed import new_order_ref, seed_customer, seed_product
from harbordb import Database, NotFound, count_queries

SEED_PREFIX = "conc"  # these tests commit: conftest.py deletes rows seeded under it


def ref() -> str:
    return new_order_ref(SEED_PREFIX)


async def seed_variants(db: Database, stocks: list[int]) -> list[int]:
    product = await seed_product(db, SEED_PREFIX, stocks)
    return [variant.id for variant in product.variants]


async def all_at_once(count: int, fn: Callable[[int], Awaitable[None]]) -> None:
    """Start `count` tasks, release them together; any unexpected error fails the group."""
    start = anyio.Event()

    async def one(number: int) -> None:
        await start.wait()
        await fn(number)

    async with anyio.create_task_group() as group:
        for number in range(count):
            group.start_soon(one, number)
        await anyio.lowlevel.checkpoint()
        start.set()


async def stock_of(db: Database, variant_id: int) -> int:
    async with db.unit_of_work(read_only=True) as uow:
        return (await uow.variants.get(variant_id, load=())).stock_qty


# -- never oversell ----------------------------------------------------------------

ATTEMPTS, STOCK = 200, 50


async def test_200_concurrent_reservations_of_stock_50(db: Database) -> None:
    """All 200 start together; the direct pool (10 + 10 overflow) and PgBouncer's
    4 server connections queue the rest, no limiter needed."""
    (variant_id,) = await seed_variants(db, [STOCK])
    inventory = Inventory(db)
    prefix = ref()
    reserved: list[Reservation] = []
    refused: list[InsufficientStock] = []

    async def attempt(number: int) -> None:
        try:
            reserved.append(await inventory.reserve(variant_id, 1, f"{prefix}-{number}"))
        except InsufficientStock as exc:
            refused.append(exc)

    await all_at_once(ATTEMPTS, attempt)

    assert (len(reserved), len(refused)) == (STOCK, ATTEMPTS - STOCK)
    assert all(r.created for r in reserved)
    assert {(e.variant_id, e.requested, e.available) for e in refused} == {(variant_id, 1, 0)}
    assert await stock_of(db, variant_id) == 0
    async with db.unit_of_work(read_only=True) as uow:
        rows = await uow.reservations.list(variant_id=variant_id, load=())
        held = {(row.id, row.order_ref, row.qty, row.status) for row in rows}
    assert held == {(r.id, r.order_ref, 1, ReservationStatus.ACTIVE) for r in reserved}


@pytest.mark.parametrize("stock", [10, 3])
async def test_identical_concurrent_reserves_make_one_reservation(db: Database, stock: int) -> None:
    """With stock == qty the losers must still get the winner's reservation, not a refusal."""
    (variant_id,) = await seed_variants(db, [stock])
    inventory = Inventory(db)
    order_ref = ref()
    results: list[Reservation] = []

    async def attempt(number: int) -> None:
        results.append(await inventory.reserve(variant_id, 3, order_ref))

    await all_at_once(40, attempt)

    assert len(results) == 40
    assert len({r.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert await stock_of(db, variant_id) == stock - 3
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.reservations.count(order_ref=order_ref) == 1


async def test_reserve_losing_the_row_lock_race_leaves_nothing(
    database: Database,
    migrated_url: str,
    wait_for_lock_wait: Callable[[Database, str], Awaitable[None]],
) -> None:
    """The claim sees stock in its snapshot, then the stock UPDATE queues behind a
    transaction that takes the last units: the claim is undone, in three statements."""
    (variant_id,) = await seed_variants(database, [2])
    inventory = Inventory(database)
    order_ref = ref()
    refused: list[InsufficientStock] = []

    async def reserve() -> None:
        with pytest.raises(InsufficientStock) as caught:
            await inventory.reserve(variant_id, 1, order_ref)
        refused.append(caught.value)

    # A second engine holds the lock and watches, so the counter sees only the reserve.
    async with Database(migrated_url) as other, other.unit_of_work() as blocker:
        await blocker.session.execute(
            update(Variant).where(Variant.id == variant_id).values(stock_qty=0)
        )
        with count_queries(database) as queries:
            async with anyio.create_task_group() as group:
                group.start_soon(reserve)
                await wait_for_lock_wait(other, "UPDATE variants SET stock_qty")
                await blocker.commit()
    assert queries.count == 3, queries.report()  # claim, take (no row), undo
    assert [(e.requested, e.available) for e in refused] == [(1, 0)]
    assert await stock_of(database, variant_id) == 0
    async with database.unit_of_work(read_only=True) as uow:
        assert await uow.reservations.count(order_ref=order_ref) == 0


# -- mixed stress --------------------------------------------------------------------

VARIANTS, INITIAL, WORKERS, OPERATIONS = 4, 15, 12, 25


async def invariant_totals(db: Database, variant_ids: list[int]) -> dict[int, int]:
    """stock + active reserved + checked out, per variant, from one snapshot."""
    held = func.coalesce(
        func.sum(
            case(
                (
                    StockReservation.status.in_(
                        [ReservationStatus.ACTIVE, ReservationStatus.CHECKED_OUT]
                    ),
                    StockReservation.qty,
                ),
                else_=0,
            )
        ),
        0,
    )
    query = (
        select(Variant.id, Variant.stock_qty + held)
        .outerjoin(StockReservation, StockReservation.variant_id == Variant.id)
        .where(Variant.id.in_(variant_ids))
        .group_by(Variant.id)
    )
    async with db.unit_of_work(read_only=True) as uow:
        return {vid: int(total) for vid, total in (await uow.session.execute(query)).all()}


async def test_mixed_operations_keep_stock_accounted_for(db: Database) -> None:
    variant_ids = await seed_variants(db, [INITIAL] * VARIANTS)
    customer = await seed_customer(db, SEED_PREFIX)
    inventory = Inventory(db)
    expected = dict.fromkeys(variant_ids, INITIAL)
    refs = [ref() for _ in range(WORKERS)]
    reservation_ids: list[int] = []
    outcomes: Counter[str] = Counter()
    samples: list[dict[int, int]] = []
    done = anyio.Event()

    async def age(order_ref: str) -> None:
        """Let a checkout's reservations lapse (stands in for the clock)."""
        async with db.unit_of_work() as uow:
            await uow.session.execute(
                update(StockReservation)
                .where(StockReservation.order_ref == order_ref)
                .values(expires_at=text("now() - interval '1 second'"))
            )
            await uow.commit()

    async def operation(rng: random.Random) -> str:
        kind = rng.choices(
            ["reserve", "release", "checkout", "age", "sweep"], weights=[50, 15, 15, 10, 10]
        )[0]
        if rng.random() < 0.3:
            refs.append(ref())  # a new checkout starts
        order_ref = rng.choice(refs)
        try:
            if kind == "reserve":
                held = await inventory.reserve(
                    rng.choice(variant_ids), rng.randint(1, 4), order_ref
                )
                reservation_ids.append(held.id)
            elif kind == "release" and reservation_ids:
                await inventory.release(rng.choice(reservation_ids))
            elif kind == "checkout":
                await inventory.checkout(order_ref, customer.id)
            elif kind == "age":
                await age(order_ref)
            elif kind == "sweep":
                await inventory.release_expired(batch_size=rng.choice([1, 5, 50]))
        except (InsufficientStock, ReservationExpired, NotFound) as exc:
            return f"{kind}: {type(exc).__name__}"
        return kind

    async def worker(number: int) -> None:
        rng = random.Random(number)
        for _ in range(OPERATIONS):
            outcomes[await operation(rng)] += 1

    async def sampler() -> None:
        while not done.is_set():
            samples.append(await invariant_totals(db, variant_ids))
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as outer:
        outer.start_soon(sampler)
        await all_at_once(WORKERS, worker)
        done.set()

    assert sum(outcomes.values()) == WORKERS * OPERATIONS
    assert samples, "the sampler never ran"
    assert [s for s in samples if s != expected] == []
    assert await invariant_totals(db, variant_ids) == expected
    # Every operation kind actually happened, including refusals.
    for kind in ("reserve", "release", "checkout", "sweep", "reserve: InsufficientStock"):
        assert outcomes[kind] > 0, outcomes
    await check_orders_match_checked_out(db, variant_ids)


async def check_orders_match_checked_out(db: Database, variant_ids: list[int]) -> None:
    async with db.unit_of_work(read_only=True) as uow:
        ordered = dict(
            (
                await uow.session.execute(
                    select(OrderItem.variant_id, func.sum(OrderItem.qty))
                    .where(OrderItem.variant_id.in_(variant_ids))
                    .group_by(OrderItem.variant_id)
                )
            ).all()
        )
        checked_out = dict(
            (
                await uow.session.execute(
                    select(StockReservation.variant_id, func.sum(StockReservation.qty))
                    .where(
                        StockReservation.variant_id.in_(variant_ids),
                        StockReservation.status == ReservationStatus.CHECKED_OUT,
                    )
                    .group_by(StockReservation.variant_id)
                )
            ).all()
        )
    assert ordered == checked_out
