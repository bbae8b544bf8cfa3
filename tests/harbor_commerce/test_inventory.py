"""Reserve, release, expire and check out through `Inventory`, against the real schema,
directly and through PgBouncer.

Every test commits (the operations open their own units of work), so each one
works on its own freshly seeded variants and order_refs.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, text, update

from harbor_commerce.inventory import (
    MAX_TTL,
    CheckoutFailed,
    InsufficientStock,
    Inventory,
    ReservationExpired,
)
from harbor_commerce.models import ReservationStatus, StockReservation, Variant
from harbor_commerce.seed import new_order_ref, seed_customer, seed_product
from harbordb import Database, NotFound, count_queries

SEED_PREFIX = "inv"  # these tests commit: conftest.py deletes rows seeded under it


def ref() -> str:
    return new_order_ref(SEED_PREFIX)


async def seed_variant(
    db: Database, *, stock: int, price_cents: int = 1000, archived: bool = False
) -> Variant:
    product = await seed_product(
        db, SEED_PREFIX, [stock], price_cents=price_cents, archived=archived
    )
    return product.variants[0]


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


async def test_reserve_takes_stock_and_records_the_reservation(db: Database) -> None:
    variant = await seed_variant(db, stock=5)
    inventory = Inventory(db)
    order_ref = ref()
    with count_queries(db) as queries:
        held = await inventory.reserve(variant.id, 2, order_ref, ttl=timedelta(minutes=7))
    assert queries.count == 2, queries.report()  # claim (INSERT ... SELECT), take (UPDATE)
    assert held.created
    assert held.status is ReservationStatus.ACTIVE
    assert (held.variant_id, held.qty, held.order_ref) == (variant.id, 2, order_ref)
    assert await stock_of(db, variant.id) == 3
    (row,) = await reservations_of(db, order_ref)
    assert (row.id, row.qty, row.status) == (held.id, 2, ReservationStatus.ACTIVE)
    # expires_at and created_at both come from the transaction's now(): exactly the ttl apart.
    assert row.expires_at - row.created_at == timedelta(minutes=7)
    assert row.expires_at == held.expires_at


async def test_reserve_is_idempotent_per_order_ref_and_variant(db: Database) -> None:
    variant = await seed_variant(db, stock=5)
    inventory = Inventory(db)
    order_ref = ref()
    first = await inventory.reserve(variant.id, 2, order_ref)
    with count_queries(db) as queries:
        again = await inventory.reserve(variant.id, 2, order_ref)
    assert queries.count == 2, queries.report()  # claim (nothing inserted), look-up
    assert not again.created
    assert (again.id, again.qty, again.expires_at) == (first.id, first.qty, first.expires_at)
    assert await stock_of(db, variant.id) == 3
    assert len(await reservations_of(db, order_ref)) == 1


async def test_retry_after_sell_out_still_finds_its_reservation(db: Database) -> None:
    variant = await seed_variant(db, stock=2)
    inventory = Inventory(db)
    order_ref = ref()
    first = await inventory.reserve(variant.id, 2, order_ref)
    again = await inventory.reserve(variant.id, 2, order_ref)
    assert (again.id, again.created) == (first.id, False)
    assert await stock_of(db, variant.id) == 0


async def test_short_stock_raises_with_requested_and_available(db: Database) -> None:
    variant = await seed_variant(db, stock=3)
    inventory = Inventory(db)
    order_ref = ref()
    with count_queries(db) as queries, pytest.raises(InsufficientStock) as caught:
        await inventory.reserve(variant.id, 4, order_ref)
    assert queries.count == 2, queries.report()
    assert (caught.value.variant_id, caught.value.requested, caught.value.available) == (
        variant.id,
        4,
        3,
    )
    assert await stock_of(db, variant.id) == 3
    assert await reservations_of(db, order_ref) == []


async def test_unknown_variant_and_archived_product_are_not_found(db: Database) -> None:
    inventory = Inventory(db)
    archived = await seed_variant(db, stock=10, archived=True)
    with pytest.raises(NotFound, match="does not exist"):
        await inventory.reserve(2**62, 1, ref())
    order_ref = ref()
    with pytest.raises(NotFound, match="archived"):
        await inventory.reserve(archived.id, 1, order_ref)
    assert await stock_of(db, archived.id) == 10
    assert await reservations_of(db, order_ref) == []


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
    db: Database, args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    inventory = Inventory(db)
    with count_queries(db) as queries, pytest.raises(ValueError, match=message):
        await inventory.reserve(1, *args, **kwargs)  # type: ignore[arg-type]
    assert queries.count == 0


async def test_reserve_after_release_refuses_the_lapsed_order_ref(db: Database) -> None:
    variant = await seed_variant(db, stock=5)
    inventory = Inventory(db)
    order_ref = ref()
    held = await inventory.reserve(variant.id, 1, order_ref)
    assert await inventory.release(held.id)
    with pytest.raises(ReservationExpired) as caught:
        await inventory.reserve(variant.id, 1, order_ref)
    assert caught.value.lapsed == {variant.id: ReservationStatus.RELEASED}
    assert await stock_of(db, variant.id) == 5


async def test_refusal_inside_a_callers_unit_of_work_leaves_it_usable(db: Database) -> None:
    plenty = await seed_variant(db, stock=5)
    scarce = await seed_variant(db, stock=1)
    inventory = Inventory(db)
    order_ref = ref()
    async with db.unit_of_work() as uow:
        await inventory.reserve(plenty.id, 2, order_ref, uow=uow)
        with pytest.raises(InsufficientStock):
            await inventory.reserve(scarce.id, 2, order_ref, uow=uow)
        await inventory.reserve(scarce.id, 1, order_ref, uow=uow)
        await uow.commit()
    assert await stock_of(db, plenty.id) == 3
    assert await stock_of(db, scarce.id) == 0
    assert sorted(r.variant_id for r in await reservations_of(db, order_ref)) == sorted(
        [plenty.id, scarce.id]
    )


async def test_a_callers_rollback_undoes_the_reservation(db: Database) -> None:
    variant = await seed_variant(db, stock=5)
    inventory = Inventory(db)
    order_ref = ref()
    async with db.unit_of_work() as uow:
        await inventory.reserve(variant.id, 2, order_ref, uow=uow)
        # no commit: leaving the block rolls back
    assert await stock_of(db, variant.id) == 5
    assert await reservations_of(db, order_ref) == []


# -- release ----------------------------------------------------------------------


async def test_release_returns_stock_once(db: Database) -> None:
    variant = await seed_variant(db, stock=5)
    inventory = Inventory(db)
    held = await inventory.reserve(variant.id, 3, ref())
    with count_queries(db) as queries:
        assert await inventory.release(held.id) is True
    assert queries.count == 1, queries.report()
    assert await stock_of(db, variant.id) == 5
    with count_queries(db) as queries:
        assert await inventory.release(held.id) is False
    assert queries.count == 2, queries.report()  # the release that matched nothing, existence
    assert await stock_of(db, variant.id) == 5
    (row,) = await reservations_of(db, held.order_ref)
    assert row.status is ReservationStatus.RELEASED


async def test_release_of_unknown_reservation_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        await Inventory(db).release(2**62)


async def test_release_after_checkout_changes_nothing(db: Database) -> None:
    variant = await seed_variant(db, stock=5)
    customer = await seed_customer(db, SEED_PREFIX)
    inventory = Inventory(db)
    held = await inventory.reserve(variant.id, 2, ref())
    await inventory.checkout(held.order_ref, customer.id)
    assert await inventory.release(held.id) is False
    assert await stock_of(db, variant.id) == 3


# -- release_expired --------------------------------------------------------------


async def test_release_expired_restores_only_lapsed_reservations(db: Database) -> None:
    variant = await seed_variant(db, stock=10)
    inventory = Inventory(db)
    lapsed, live = ref(), ref()
    await inventory.reserve(variant.id, 3, lapsed)
    await inventory.reserve(variant.id, 2, live)
    await expire_now(db, lapsed)
    assert await stock_of(db, variant.id) == 5
    # Other tests' leftovers may expire here too: count only what this test owns.
    await inventory.release_expired(batch_size=1000)
    assert await stock_of(db, variant.id) == 8
    assert [r.status for r in await reservations_of(db, lapsed)] == [ReservationStatus.EXPIRED]
    assert [r.status for r in await reservations_of(db, live)] == [ReservationStatus.ACTIVE]


async def test_release_expired_sums_per_variant_in_one_statement(db: Database) -> None:
    first = await seed_variant(db, stock=10)
    second = await seed_variant(db, stock=10)
    inventory = Inventory(db)
    await inventory.release_expired(batch_size=1000)  # clear other tests' leftovers
    refs = [ref() for _ in range(3)]
    for order_ref in refs:
        await inventory.reserve(first.id, 2, order_ref)
        await inventory.reserve(second.id, 1, order_ref)
        await expire_now(db, order_ref)
    with count_queries(db) as queries:
        released = await inventory.release_expired(batch_size=100)
    assert queries.count == 1, queries.report()
    assert released == 6
    assert await stock_of(db, first.id) == 10
    assert await stock_of(db, second.id) == 10


async def test_release_expired_works_in_batches(db: Database) -> None:
    variant = await seed_variant(db, stock=10)
    inventory = Inventory(db)
    await inventory.release_expired(batch_size=1000)
    refs = [ref() for _ in range(5)]
    for order_ref in refs:
        await inventory.reserve(variant.id, 1, order_ref)
        await expire_now(db, order_ref)
    with count_queries(db) as queries:
        assert await inventory.release_expired(batch_size=2, max_batches=1) == 2
    assert queries.count == 1
    with count_queries(db) as queries:
        assert await inventory.release_expired(batch_size=2) == 3
    assert queries.count == 2  # 2 + 1: the short batch ends the run
    assert await stock_of(db, variant.id) == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be between"),
        ({"batch_size": 10_001}, "batch_size must be between"),
        ({"batch_size": 1, "max_batches": 0}, "max_batches must be"),
    ],
)
async def test_release_expired_checks_its_arguments(
    db: Database, kwargs: dict[str, int], message: str
) -> None:
    with count_queries(db) as queries, pytest.raises(ValueError, match=message):
        await Inventory(db).release_expired(**kwargs)  # type: ignore[arg-type]
    assert queries.count == 0


# -- checkout ---------------------------------------------------------------------


async def test_checkout_creates_the_order_at_current_prices(db: Database) -> None:
    shirt = await seed_variant(db, stock=5, price_cents=2000)
    socks = await seed_variant(db, stock=5, price_cents=300)
    customer = await seed_customer(db, SEED_PREFIX)
    inventory = Inventory(db)
    order_ref = ref()
    await inventory.reserve(shirt.id, 1, order_ref, customer_id=customer.id)
    await inventory.reserve(socks.id, 3, order_ref, customer_id=customer.id)
    async with db.unit_of_work() as uow:
        await uow.variants.update(socks.id, price_cents=250)  # the price at checkout counts
        await uow.commit()
    with count_queries(db) as queries:
        order = await inventory.checkout(order_ref, customer.id)
    assert queries.count == 4, queries.report()  # lock, order, items, reservations
    assert order.total_cents == 2000 + 3 * 250
    assert {(i.variant_id, i.qty, i.unit_price_cents) for i in order.items} == {
        (shirt.id, 1, 2000),
        (socks.id, 3, 250),
    }
    assert {r.status for r in await reservations_of(db, order_ref)} == {
        ReservationStatus.CHECKED_OUT
    }
    # Stock left the shelf at reserve time; checkout does not move it again.
    assert (await stock_of(db, shirt.id), await stock_of(db, socks.id)) == (4, 2)


async def test_checking_out_twice_returns_the_same_order(db: Database) -> None:
    variant = await seed_variant(db, stock=5)
    customer = await seed_customer(db, SEED_PREFIX)
    inventory = Inventory(db)
    order_ref = ref()
    await inventory.reserve(variant.id, 2, order_ref)
    first = await inventory.checkout(order_ref, customer.id)
    with count_queries(db) as queries:
        again = await inventory.checkout(order_ref, customer.id)
    assert queries.count == 3, queries.report()  # lock, order, items
    assert again.id == first.id
    assert [(i.variant_id, i.qty) for i in again.items] == [(variant.id, 2)]
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.orders.count(order_ref=order_ref) == 1


@pytest.mark.parametrize("lapse", ["expired", "swept", "released"])
async def test_checkout_with_a_lapsed_reservation_writes_nothing(db: Database, lapse: str) -> None:
    good = await seed_variant(db, stock=5)
    gone = await seed_variant(db, stock=5)
    customer = await seed_customer(db, SEED_PREFIX)
    inventory = Inventory(db)
    order_ref = ref()
    await inventory.reserve(good.id, 1, order_ref)
    held = await inventory.reserve(gone.id, 1, order_ref)
    if lapse == "released":
        await inventory.release(held.id)
    else:
        await expire_now(db, order_ref)  # both lapse by the clock ...
        async with db.unit_of_work() as uow:  # ... but only one is past it
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
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.orders.count(order_ref=order_ref) == 0
    statuses = {r.variant_id: r.status for r in await reservations_of(db, order_ref)}
    assert statuses[good.id] is ReservationStatus.ACTIVE


async def test_checkout_refuses_another_customers_reservations(db: Database) -> None:
    variant = await seed_variant(db, stock=5)
    owner, other = await seed_customer(db, SEED_PREFIX), await seed_customer(db, SEED_PREFIX)
    inventory = Inventory(db)
    order_ref = ref()
    await inventory.reserve(variant.id, 1, order_ref, customer_id=owner.id)
    with pytest.raises(CheckoutFailed, match="another customer"):
        await inventory.checkout(order_ref, other.id)
    order = await inventory.checkout(order_ref, owner.id)
    with pytest.raises(CheckoutFailed, match="another customer"):
        await inventory.checkout(order_ref, other.id)
    assert order.customer_id == owner.id


async def test_checkout_of_an_unknown_order_ref_is_not_found(db: Database) -> None:
    customer = await seed_customer(db, SEED_PREFIX)
    with pytest.raises(NotFound):
        await Inventory(db).checkout(ref(), customer.id)


async def test_checkout_inside_a_callers_rollback_leaves_nothing(db: Database) -> None:
    variant = await seed_variant(db, stock=5)
    customer = await seed_customer(db, SEED_PREFIX)
    inventory = Inventory(db)
    order_ref = ref()
    await inventory.reserve(variant.id, 1, order_ref)
    async with db.unit_of_work() as uow:
        await inventory.checkout(order_ref, customer.id, uow=uow)
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.orders.count(order_ref=order_ref) == 0
    assert [r.status for r in await reservations_of(db, order_ref)] == [ReservationStatus.ACTIVE]
