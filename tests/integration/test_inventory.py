"""Reserve, release, expire and check out through `Inventory`, against the real schema.

Every test commits (the operations open their own units of work), so each one
works on its own freshly seeded variants and order_refs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, text, update

from harbordb import Database, NotFound, count_queries
from harbordb.inventory import (
    MAX_TTL,
    CheckoutFailed,
    InsufficientStock,
    Inventory,
    ReservationExpired,
)
from harbordb.models import (
    Customer,
    Product,
    ReservationStatus,
    StockReservation,
    Variant,
)


def ref() -> str:
    return f"inv-{uuid.uuid4().hex}"


async def seed_variant(
    db: Database, *, stock: int, price_cents: int = 1000, archived: bool = False
) -> Variant:
    tag = uuid.uuid4().hex[:12]
    variant = Variant(sku=f"INV-{tag}", name="one size", price_cents=price_cents, stock_qty=stock)
    product = Product(
        name=f"inventory {tag}",
        archived_at=datetime.now(UTC) if archived else None,
        variants=[variant],
    )
    async with db.unit_of_work() as uow:
        await uow.products.add(product)
        await uow.commit()
    return variant


async def seed_customer(db: Database) -> Customer:
    customer = Customer(email=f"{uuid.uuid4().hex}@example.com", name="Inventory Tester")
    async with db.unit_of_work() as uow:
        await uow.customers.add(customer)
        await uow.commit()
    return customer


async def stock_of(db: Database, variant_id: int) -> int:
    async with db.unit_of_work(read_only=True) as uow:
        return (await uow.variants.get(variant_id, load=())).stock_qty


async def reservations_of(db: Database, order_ref: str) -> list[StockReservation]:
    async with db.unit_of_work(read_only=True) as uow:
        rows = await uow.reservations.list(order_ref=order_ref, load=())
        uow.session.expunge_all()  # keep them readable after the read-only unit rolls back
    return rows


async def expire_now(db: Database, order_ref: str) -> None:
    """Move a checkout's reservations into the past (the clock cannot be waited on in tests)."""
    async with db.unit_of_work() as uow:
        await uow.session.execute(
            update(StockReservation)
            .where(StockReservation.order_ref == order_ref)
            .values(expires_at=text("now() - interval '1 minute'"))
        )
        await uow.commit()


# -- reserve ----------------------------------------------------------------------


async def test_reserve_takes_stock_and_records_the_reservation(database: Database) -> None:
    variant = await seed_variant(database, stock=5)
    inventory = Inventory(database)
    order_ref = ref()
    with count_queries(database) as queries:
        held = await inventory.reserve(variant.id, 2, order_ref, ttl=timedelta(minutes=7))
    assert queries.count == 2, queries.report()  # claim (INSERT ... SELECT), take (UPDATE)
    assert held.created
    assert held.status is ReservationStatus.ACTIVE
    assert (held.variant_id, held.qty, held.order_ref) == (variant.id, 2, order_ref)
    assert await stock_of(database, variant.id) == 3
    (row,) = await reservations_of(database, order_ref)
    assert (row.id, row.qty, row.status) == (held.id, 2, ReservationStatus.ACTIVE)
    # expires_at and created_at both come from the transaction's now(): exactly the ttl apart.
    assert row.expires_at - row.created_at == timedelta(minutes=7)
    assert row.expires_at == held.expires_at


async def test_reserve_is_idempotent_per_order_ref_and_variant(database: Database) -> None:
    variant = await seed_variant(database, stock=5)
    inventory = Inventory(database)
    order_ref = ref()
    first = await inventory.reserve(variant.id, 2, order_ref)
    with count_queries(database) as queries:
        again = await inventory.reserve(variant.id, 2, order_ref)
    assert queries.count == 2, queries.report()  # claim (nothing inserted), look-up
    assert not again.created
    assert (again.id, again.qty, again.expires_at) == (first.id, first.qty, first.expires_at)
    assert await stock_of(database, variant.id) == 3
    assert len(await reservations_of(database, order_ref)) == 1


async def test_retry_after_sell_out_still_finds_its_reservation(database: Database) -> None:
    variant = await seed_variant(database, stock=2)
    inventory = Inventory(database)
    order_ref = ref()
    first = await inventory.reserve(variant.id, 2, order_ref)
    again = await inventory.reserve(variant.id, 2, order_ref)
    assert (again.id, again.created) == (first.id, False)
    assert await stock_of(database, variant.id) == 0


async def test_short_stock_raises_with_requested_and_available(database: Database) -> None:
    variant = await seed_variant(database, stock=3)
    inventory = Inventory(database)
    order_ref = ref()
    with count_queries(database) as queries, pytest.raises(InsufficientStock) as caught:
        await inventory.reserve(variant.id, 4, order_ref)
    assert queries.count == 2, queries.report()
    assert (caught.value.variant_id, caught.value.requested, caught.value.available) == (
        variant.id,
        4,
        3,
    )
    assert await stock_of(database, variant.id) == 3
    assert await reservations_of(database, order_ref) == []


async def test_unknown_variant_and_archived_product_are_not_found(database: Database) -> None:
    inventory = Inventory(database)
    archived = await seed_variant(database, stock=10, archived=True)
    with pytest.raises(NotFound, match="does not exist"):
        await inventory.reserve(2**62, 1, ref())
    order_ref = ref()
    with pytest.raises(NotFound, match="archived"):
        await inventory.reserve(archived.id, 1, order_ref)
    assert await stock_of(database, archived.id) == 10
    assert await reservations_of(database, order_ref) == []


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0, "r"), {}, "qty must be between 1"),
        ((-1, "r"), {}, "qty must be between 1"),
        ((True, "r"), {}, "qty must be a whole number"),
        ((1.5, "r"), {}, "qty must be a whole number"),
        ((1, "r"), {"ttl": timedelta(0)}, "ttl must be between"),
        ((1, "r"), {"ttl": -5}, "ttl must be between"),
        ((1, "r"), {"ttl": MAX_TTL + timedelta(seconds=1)}, "ttl must be between"),
        ((1, "r"), {"ttl": float("nan")}, "ttl must be a timedelta"),
        ((1, ""), {}, "order_ref must be a non-empty string"),
        ((1, "x" * 101), {}, "at most 100 characters"),
        ((1, "r"), {"customer_id": 0}, "customer_id must be a positive"),
    ],
)
async def test_bad_arguments_raise_before_any_sql(
    database: Database, args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    inventory = Inventory(database)
    with count_queries(database) as queries, pytest.raises(ValueError, match=message):
        await inventory.reserve(1, *args, **kwargs)  # type: ignore[arg-type]
    assert queries.count == 0


async def test_reserve_after_release_refuses_the_lapsed_order_ref(database: Database) -> None:
    variant = await seed_variant(database, stock=5)
    inventory = Inventory(database)
    order_ref = ref()
    held = await inventory.reserve(variant.id, 1, order_ref)
    assert await inventory.release(held.id)
    with pytest.raises(ReservationExpired) as caught:
        await inventory.reserve(variant.id, 1, order_ref)
    assert caught.value.lapsed == {variant.id: ReservationStatus.RELEASED}
    assert await stock_of(database, variant.id) == 5


async def test_refusal_inside_a_callers_unit_of_work_leaves_it_usable(database: Database) -> None:
    plenty = await seed_variant(database, stock=5)
    scarce = await seed_variant(database, stock=1)
    inventory = Inventory(database)
    order_ref = ref()
    async with database.unit_of_work() as uow:
        await inventory.reserve(plenty.id, 2, order_ref, uow=uow)
        with pytest.raises(InsufficientStock):
            await inventory.reserve(scarce.id, 2, order_ref, uow=uow)
        await inventory.reserve(scarce.id, 1, order_ref, uow=uow)
        await uow.commit()
    assert await stock_of(database, plenty.id) == 3
    assert await stock_of(database, scarce.id) == 0
    assert sorted(r.variant_id for r in await reservations_of(database, order_ref)) == sorted(
        [plenty.id, scarce.id]
    )


async def test_a_callers_rollback_undoes_the_reservation(database: Database) -> None:
    variant = await seed_variant(database, stock=5)
    inventory = Inventory(database)
    order_ref = ref()
    async with database.unit_of_work() as uow:
        await inventory.reserve(variant.id, 2, order_ref, uow=uow)
        # no commit: leaving the block rolls back
    assert await stock_of(database, variant.id) == 5
    assert await reservations_of(database, order_ref) == []


# -- release ----------------------------------------------------------------------


async def test_release_returns_stock_once(database: Database) -> None:
    variant = await seed_variant(database, stock=5)
    inventory = Inventory(database)
    held = await inventory.reserve(variant.id, 3, ref())
    with count_queries(database) as queries:
        assert await inventory.release(held.id) is True
    assert queries.count == 1, queries.report()
    assert await stock_of(database, variant.id) == 5
    with count_queries(database) as queries:
        assert await inventory.release(held.id) is False
    assert queries.count == 2, queries.report()  # the release that matched nothing, existence
    assert await stock_of(database, variant.id) == 5
    (row,) = await reservations_of(database, held.order_ref)
    assert row.status is ReservationStatus.RELEASED


async def test_release_of_unknown_reservation_is_not_found(database: Database) -> None:
    with pytest.raises(NotFound):
        await Inventory(database).release(2**62)


async def test_release_after_checkout_changes_nothing(database: Database) -> None:
    variant = await seed_variant(database, stock=5)
    customer = await seed_customer(database)
    inventory = Inventory(database)
    held = await inventory.reserve(variant.id, 2, ref())
    await inventory.checkout(held.order_ref, customer.id)
    assert await inventory.release(held.id) is False
    assert await stock_of(database, variant.id) == 3


# -- release_expired --------------------------------------------------------------


async def test_release_expired_restores_only_lapsed_reservations(database: Database) -> None:
    variant = await seed_variant(database, stock=10)
    inventory = Inventory(database)
    lapsed, live = ref(), ref()
    await inventory.reserve(variant.id, 3, lapsed)
    await inventory.reserve(variant.id, 2, live)
    await expire_now(database, lapsed)
    assert await stock_of(database, variant.id) == 5
    # Other tests' leftovers may expire here too: count only what this test owns.
    await inventory.release_expired(batch_size=1000)
    assert await stock_of(database, variant.id) == 8
    assert [r.status for r in await reservations_of(database, lapsed)] == [
        ReservationStatus.EXPIRED
    ]
    assert [r.status for r in await reservations_of(database, live)] == [ReservationStatus.ACTIVE]


async def test_release_expired_sums_per_variant_in_one_statement(database: Database) -> None:
    first = await seed_variant(database, stock=10)
    second = await seed_variant(database, stock=10)
    inventory = Inventory(database)
    await inventory.release_expired(batch_size=1000)  # clear other tests' leftovers
    refs = [ref() for _ in range(3)]
    for order_ref in refs:
        await inventory.reserve(first.id, 2, order_ref)
        await inventory.reserve(second.id, 1, order_ref)
        await expire_now(database, order_ref)
    with count_queries(database) as queries:
        released = await inventory.release_expired(batch_size=100)
    assert queries.count == 1, queries.report()
    assert released == 6
    assert await stock_of(database, first.id) == 10
    assert await stock_of(database, second.id) == 10


async def test_release_expired_works_in_batches(database: Database) -> None:
    variant = await seed_variant(database, stock=10)
    inventory = Inventory(database)
    await inventory.release_expired(batch_size=1000)
    refs = [ref() for _ in range(5)]
    for order_ref in refs:
        await inventory.reserve(variant.id, 1, order_ref)
        await expire_now(database, order_ref)
    with count_queries(database) as queries:
        assert await inventory.release_expired(batch_size=2, max_batches=1) == 2
    assert queries.count == 1
    with count_queries(database) as queries:
        assert await inventory.release_expired(batch_size=2) == 3
    assert queries.count == 2  # 2 + 1: the short batch ends the run
    assert await stock_of(database, variant.id) == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be between"),
        ({"batch_size": 10_001}, "batch_size must be between"),
        ({"batch_size": 1, "max_batches": 0}, "max_batches must be"),
    ],
)
async def test_release_expired_checks_its_arguments(
    database: Database, kwargs: dict[str, int], message: str
) -> None:
    with count_queries(database) as queries, pytest.raises(ValueError, match=message):
        await Inventory(database).release_expired(**kwargs)  # type: ignore[arg-type]
    assert queries.count == 0


# -- checkout ---------------------------------------------------------------------


async def test_checkout_creates_the_order_at_current_prices(database: Database) -> None:
    shirt = await seed_variant(database, stock=5, price_cents=2000)
    socks = await seed_variant(database, stock=5, price_cents=300)
    customer = await seed_customer(database)
    inventory = Inventory(database)
    order_ref = ref()
    await inventory.reserve(shirt.id, 1, order_ref, customer_id=customer.id)
    await inventory.reserve(socks.id, 3, order_ref, customer_id=customer.id)
    async with database.unit_of_work() as uow:
        await uow.variants.update(socks.id, price_cents=250)  # the price at checkout counts
        await uow.commit()
    with count_queries(database) as queries:
        order = await inventory.checkout(order_ref, customer.id)
    assert queries.count == 4, queries.report()  # lock, order, items, reservations
    assert order.total_cents == 2000 + 3 * 250
    assert {(i.variant_id, i.qty, i.unit_price_cents) for i in order.items} == {
        (shirt.id, 1, 2000),
        (socks.id, 3, 250),
    }
    assert {r.status for r in await reservations_of(database, order_ref)} == {
        ReservationStatus.CHECKED_OUT
    }
    # Stock left the shelf at reserve time; checkout does not move it again.
    assert (await stock_of(database, shirt.id), await stock_of(database, socks.id)) == (4, 2)


async def test_checking_out_twice_returns_the_same_order(database: Database) -> None:
    variant = await seed_variant(database, stock=5)
    customer = await seed_customer(database)
    inventory = Inventory(database)
    order_ref = ref()
    await inventory.reserve(variant.id, 2, order_ref)
    first = await inventory.checkout(order_ref, customer.id)
    with count_queries(database) as queries:
        again = await inventory.checkout(order_ref, customer.id)
    assert queries.count == 3, queries.report()  # lock, order, items
    assert again.id == first.id
    assert [(i.variant_id, i.qty) for i in again.items] == [(variant.id, 2)]
    async with database.unit_of_work(read_only=True) as uow:
        assert await uow.orders.count(order_ref=order_ref) == 1


@pytest.mark.parametrize("lapse", ["expired", "swept", "released"])
async def test_checkout_with_a_lapsed_reservation_writes_nothing(
    database: Database, lapse: str
) -> None:
    good = await seed_variant(database, stock=5)
    gone = await seed_variant(database, stock=5)
    customer = await seed_customer(database)
    inventory = Inventory(database)
    order_ref = ref()
    await inventory.reserve(good.id, 1, order_ref)
    held = await inventory.reserve(gone.id, 1, order_ref)
    if lapse == "released":
        await inventory.release(held.id)
    else:
        await expire_now(database, order_ref)  # both lapse by the clock ...
        async with database.unit_of_work() as uow:  # ... but only one is past it
            await uow.session.execute(
                update(StockReservation)
                .where(StockReservation.id != held.id, StockReservation.order_ref == order_ref)
                .values(expires_at=func.now() + timedelta(minutes=5))
            )
            await uow.commit()
        if lapse == "swept":
            await inventory.release_expired(batch_size=1000)
    expected = ReservationStatus.RELEASED if lapse == "released" else ReservationStatus.EXPIRED
    with pytest.raises(ReservationExpired) as caught:
        await inventory.checkout(order_ref, customer.id)
    assert caught.value.lapsed == {gone.id: expected}
    async with database.unit_of_work(read_only=True) as uow:
        assert await uow.orders.count(order_ref=order_ref) == 0
    statuses = {r.variant_id: r.status for r in await reservations_of(database, order_ref)}
    assert statuses[good.id] is ReservationStatus.ACTIVE


async def test_checkout_refuses_another_customers_reservations(database: Database) -> None:
    variant = await seed_variant(database, stock=5)
    owner, other = await seed_customer(database), await seed_customer(database)
    inventory = Inventory(database)
    order_ref = ref()
    await inventory.reserve(variant.id, 1, order_ref, customer_id=owner.id)
    with pytest.raises(CheckoutFailed, match="another customer"):
        await inventory.checkout(order_ref, other.id)
    order = await inventory.checkout(order_ref, owner.id)
    with pytest.raises(CheckoutFailed, match="another customer"):
        await inventory.checkout(order_ref, other.id)
    assert order.customer_id == owner.id


async def test_checkout_of_an_unknown_order_ref_is_not_found(database: Database) -> None:
    customer = await seed_customer(database)
    with pytest.raises(NotFound):
        await Inventory(database).checkout(ref(), customer.id)


async def test_checkout_inside_a_callers_rollback_leaves_nothing(database: Database) -> None:
    variant = await seed_variant(database, stock=5)
    customer = await seed_customer(database)
    inventory = Inventory(database)
    order_ref = ref()
    await inventory.reserve(variant.id, 1, order_ref)
    async with database.unit_of_work() as uow:
        await inventory.checkout(order_ref, customer.id, uow=uow)
    async with database.unit_of_work(read_only=True) as uow:
        assert await uow.orders.count(order_ref=order_ref) == 0
    assert [r.status for r in await reservations_of(database, order_ref)] == [
        ReservationStatus.ACTIVE
    ]
