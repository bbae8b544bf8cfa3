"""The Harbor Commerce repositories against PostgreSQL, directly and through PgBouncer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession

from harbor_commerce.models import (
    Customer,
    Order,
    OrderItem,
    OrderStatus,
    Product,
    StockReservation,
    Tag,
    Variant,
)
from harbor_commerce.repositories import (
    CustomerRepository,
    OrderRepository,
    ProductRepository,
    ReservationRepository,
    TagRepository,
    VariantRepository,
)
from harbordb import Database, count_queries
from harbordb.errors import CheckViolation, NotFound


def marker() -> str:
    return uuid.uuid4().hex[:8]


async def seed_catalog(session: AsyncSession, count: int, prefix: str) -> list[Product]:
    """`count` products named ``{prefix}-NNNN`` with 2 variants and 2 tags each."""
    tags = [Tag(name=f"{prefix}-red"), Tag(name=f"{prefix}-blue")]
    products = [
        Product(
            name=f"{prefix}-{i:04d}",
            variants=[
                Variant(sku=f"{prefix}-{i}-{size}", name=size, price_cents=1000 + i)
                for size in ("S", "L")
            ],
            tags=tags if i % 2 == 0 else tags[:1],
        )
        for i in range(count)
    ]
    session.add_all(products)
    await session.flush()
    session.expunge_all()
    return products


async def seed_customer(session: AsyncSession) -> Customer:
    customer = Customer(email=f"{marker()}@example.com", name="Grace")
    session.add(customer)
    await session.flush()
    return customer


# -- customers --------------------------------------------------------------------


async def test_customer_by_email(db: Database, session: AsyncSession) -> None:
    customer = await seed_customer(session)
    customers = CustomerRepository(session)
    with count_queries(db) as queries:
        found = await customers.by_email(customer.email)
        missing = await customers.by_email(f"nobody-{marker()}@example.com")
    assert queries.count == 2
    assert found is customer
    assert missing is None


async def test_customer_search_covers_email_and_name(session: AsyncSession) -> None:
    customer = await seed_customer(session)
    customers = CustomerRepository(session)
    local_part = customer.email.split("@")[0]
    assert await customers.list(customers.matching(local_part.upper())) == [customer]
    assert customer in await customers.list(customers.matching("grac"))


# -- products ---------------------------------------------------------------------


@pytest.mark.parametrize("rows", [5, 500])
async def test_catalog_page_is_one_statement_for_any_size(
    db: Database, session: AsyncSession, rows: int
) -> None:
    prefix = marker()
    await seed_catalog(session, rows, prefix)
    products = ProductRepository(session)
    with count_queries(db) as queries:
        await products.catalog_page(search=prefix, limit=500)
    assert queries.count in (1, 3), queries.report()  # its query's first run: one per level
    session.expunge_all()
    with count_queries(db) as queries:
        page = await products.catalog_page(search=prefix, limit=500)
    assert queries.count == 1, queries.report()  # products, variants and tags nested
    assert len(page.items) == rows
    with count_queries(db) as lazy:
        shape = {(len(p.variants), len(p.tags)) for p in page.items}
    assert lazy.count == 0
    assert shape == ({(2, 2), (2, 1)} if rows > 1 else {(2, 2)})


async def test_catalog_pages_walk_live_products_by_name(session: AsyncSession) -> None:
    prefix = marker()
    products_seeded = await seed_catalog(session, 9, prefix)
    products = ProductRepository(session)
    await products.archive(products_seeded[4].id)
    names: list[str] = []
    cursor = None
    while True:
        page = await products.catalog_page(search=prefix, after=cursor, limit=3, total="exact")
        assert page.total == 8
        names += [p.name for p in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert names == [f"{prefix}-{i:04d}" for i in range(9) if i != 4]


async def test_catalog_filters_by_tag_and_literal_search(session: AsyncSession) -> None:
    prefix = marker()
    await seed_catalog(session, 4, prefix)
    session.add(Product(name=f"{prefix}_100% cotton"))
    await session.flush()
    products = ProductRepository(session)
    blue = await products.catalog_page(tag=f"{prefix}-blue")
    assert [p.name for p in blue.items] == [f"{prefix}-0000", f"{prefix}-0002"]
    assert all(f"{prefix}-blue" in {t.name for t in p.tags} for p in blue.items)
    literal = await products.catalog_page(search=f"{prefix}_100%")
    assert [p.name for p in literal.items] == [f"{prefix}_100% cotton"]
    assert (await products.catalog_page(search=f"{prefix}%cotton")).items == ()


async def test_catalog_items_raise_outside_the_plan(session: AsyncSession) -> None:
    prefix = marker()
    await seed_catalog(session, 1, prefix)
    (product,) = (await ProductRepository(session).catalog_page(search=prefix)).items
    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        _ = product.variants[0].reservations
    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        _ = product.tags[0].products


async def test_archive_is_one_update_and_keeps_the_first_time(
    db: Database, session: AsyncSession
) -> None:
    prefix = marker()
    live, earlier = await seed_catalog(session, 2, prefix)
    products = ProductRepository(session)
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    await products.update(earlier.id, archived_at=long_ago)
    with count_queries(db) as queries:
        archived = await products.archive(live.id)
        again = await products.archive(earlier.id)
    assert queries.count == 2
    assert archived.archived_at is not None
    assert archived.archived_at > long_ago
    assert again.archived_at == long_ago
    assert await products.count(products.live(), Product.name.startswith(prefix)) == 0
    with pytest.raises(NotFound):
        await products.archive(987654321)


async def test_tags_upsert_by_name(db: Database, session: AsyncSession) -> None:
    tags = TagRepository(session)
    name = f"{marker()}-sale"
    with count_queries(db) as queries:
        first = await tags.upsert({"name": name})
        second = await tags.upsert({"name": name})
    assert queries.count == 2
    assert first is second
    assert await tags.count(name=name) == 1


# -- variants ---------------------------------------------------------------------


async def test_variant_by_sku_and_by_skus(db: Database, session: AsyncSession) -> None:
    prefix = marker()
    await seed_catalog(session, 3, prefix)
    variants = VariantRepository(session)
    with count_queries(db) as queries:
        one = await variants.by_sku(f"{prefix}-1-L")
        none = await variants.by_sku(f"{prefix}-9-L")
        many = await variants.by_skus(
            [f"{prefix}-2-S", "missing", f"{prefix}-0-L", f"{prefix}-2-S"]
        )
        empty = await variants.by_skus([])
    assert queries.count == 3  # the product comes joined; no SKUs, no statement
    assert "= ANY" in queries.statements[2]
    assert one is not None
    assert one.product.name == f"{prefix}-0001"
    assert none is None
    assert [v.sku for v in many] == [f"{prefix}-2-S", f"{prefix}-0-L"]
    assert empty == []


async def test_adjust_stock_is_one_update_and_cannot_go_negative(
    db: Database, session: AsyncSession
) -> None:
    prefix = marker()
    await seed_catalog(session, 1, prefix)
    variants = VariantRepository(session)
    variant = await variants.by_sku(f"{prefix}-0-S")
    assert variant is not None
    with count_queries(db) as queries:
        await variants.adjust_stock(variant.id, 5)
        taken = await variants.adjust_stock(variant.id, -3)
    assert queries.count == 2
    assert taken.stock_qty == 2
    with pytest.raises(NotFound):
        await variants.adjust_stock(987654321, 1)
    with pytest.raises(CheckViolation) as caught:
        await variants.adjust_stock(variant.id, -3)
    assert caught.value.constraint is not None
    assert "stock_qty_non_negative" in caught.value.constraint
    await session.rollback()


# -- orders -----------------------------------------------------------------------


async def seed_orders(session: AsyncSession, count: int) -> tuple[Customer, list[Order]]:
    prefix = marker()
    customer = await seed_customer(session)
    (product,) = await seed_catalog(session, 1, prefix)
    orders = [
        Order(
            customer_id=customer.id,
            order_ref=f"{prefix}-{i}",
            status=OrderStatus.PAID if i % 2 else OrderStatus.PENDING,
            items=[
                OrderItem(variant_id=v.id, qty=1 + i, unit_price_cents=100)
                for v in product.variants
            ],
        )
        for i in range(count)
    ]
    session.add_all(orders)
    await session.flush()
    session.expunge_all()
    return customer, orders


async def test_order_by_ref_loads_items_variants_and_products(
    db: Database, session: AsyncSession
) -> None:
    _, seeded = await seed_orders(session, 2)
    orders = OrderRepository(session)
    with count_queries(db) as queries:
        order = await orders.by_ref(seeded[1].order_ref)
        missing = await orders.by_ref("no-such-order")
    assert queries.count == 3  # orders + items for the hit, orders for the miss
    assert missing is None
    assert order is not None
    with count_queries(db) as lazy:
        lines = [(item.qty, item.variant.sku, item.variant.product.name) for item in order.items]
    assert lazy.count == 0
    assert [qty for qty, _, _ in lines] == [2, 2]


@pytest.mark.parametrize("rows", [5, 500])
async def test_orders_for_a_customer_newest_first(
    db: Database, session: AsyncSession, rows: int
) -> None:
    customer, seeded = await seed_orders(session, rows)
    orders = OrderRepository(session)
    with count_queries(db) as queries:
        page = await orders.for_customer(customer.id, limit=500)
    assert queries.count == 2, queries.report()
    # One transaction: every created_at ties, and the id (descending) breaks the tie.
    assert [o.id for o in page.items] == sorted((o.id for o in seeded), reverse=True)
    paid = await orders.for_customer(customer.id, status=OrderStatus.PAID, limit=2)
    paid_count = rows // 2  # odd positions are paid
    assert all(o.status is OrderStatus.PAID for o in paid.items)
    assert len(paid.items) == 2
    assert paid.has_more is (paid_count > 2)


# -- reservations -----------------------------------------------------------------


async def seed_reservations(
    session: AsyncSession, customer_id: int | None, expires_in: timedelta, count: int = 3
) -> list[StockReservation]:
    prefix = marker()
    (product,) = await seed_catalog(session, 1, prefix)
    variant_ids = [v.id for v in product.variants]
    now = datetime.now(UTC)
    reservations = [
        StockReservation(
            variant_id=variant_ids[i % 2],
            customer_id=customer_id,
            order_ref=f"{prefix}-{i // 2}",
            qty=1,
            expires_at=now + expires_in + timedelta(seconds=i),
        )
        for i in range(count)
    ]
    session.add_all(reservations)
    await session.flush()
    session.expunge_all()
    return reservations


async def test_reservations_for_an_order_and_active(db: Database, session: AsyncSession) -> None:
    customer = await seed_customer(session)
    seeded = await seed_reservations(session, customer.id, timedelta(minutes=15), count=4)
    reservations = ReservationRepository(session)
    order_ref = seeded[0].order_ref
    with count_queries(db) as queries:
        held = await reservations.for_order(order_ref)
        mine = await reservations.active(customer_id=customer.id)
        first_two = await reservations.active(customer_id=customer.id, limit=2)
    assert queries.count == 3
    assert sorted(r.id for r in held) == sorted(r.id for r in seeded[:2])
    assert all(r.variant.sku for r in held)  # the plan joins the variant
    assert [r.id for r in mine] == [r.id for r in seeded]  # soonest expiry first
    assert [r.id for r in first_two] == [r.id for r in seeded[:2]]


async def test_claim_expired_skips_rows_another_sweeper_holds(db: Database) -> None:
    """Two sweepers at once, on committed rows: SKIP LOCKED hands each different rows."""
    async with db.session() as setup, setup.begin():
        seeded = await seed_reservations(setup, None, -timedelta(minutes=5), count=6)
    mine = {r.id for r in seeded}
    try:
        # Neither session commits: closing them rolls back and releases the locks.
        async with db.session() as first, db.session() as second:
            claimed_first = await ReservationRepository(first).claim_expired(limit=3)
            with count_queries(db) as queries:
                claimed_second = await ReservationRepository(second).claim_expired(limit=500)
            assert queries.count == 1
            assert "FOR UPDATE OF stock_reservations SKIP LOCKED" in queries.statements[0]
            first_ids = {r.id for r in claimed_first}
            second_ids = {r.id for r in claimed_second}
            assert len(first_ids) == 3
            assert not first_ids & second_ids
            assert mine <= first_ids | second_ids
            assert all(r.expires_at < datetime.now(UTC) for r in claimed_second)
    finally:
        async with db.session() as cleanup, cleanup.begin():
            product_ids = {
                r.variant.product_id for r in await ReservationRepository(cleanup).get_many(mine)
            }
            await ProductRepository(cleanup).delete_where(Product.id.in_(product_ids))
