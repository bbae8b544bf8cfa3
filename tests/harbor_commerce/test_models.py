"""The Harbor Commerce models against the real schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, select, text, update
from sqlalchemy.exc import IntegrityError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession

from harbor_commerce.models import (
    Base,
    Customer,
    Order,
    OrderItem,
    Product,
    StockReservation,
    Tag,
    Variant,
)

SKU = "KETTLE-MT-1"


async def seed_one_of_each(session: AsyncSession) -> None:
    customer = Customer(email="model-test@example.com", name="Ada")
    product = Product(name="Kettle", tags=[Tag(name="kitchen-model-test")])
    variant = Variant(product=product, sku=SKU, name="1 l", price_cents=2500, stock_qty=3)
    order = Order(customer=customer, order_ref="model-test-1", total_cents=2500)
    order.items = [OrderItem(variant=variant, qty=1, unit_price_cents=2500)]
    reservation = StockReservation(
        variant=variant,
        customer=customer,
        order_ref="model-test-1",
        qty=1,
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
    )
    session.add_all([customer, product, variant, order, reservation])
    await session.flush()
    session.expunge_all()


async def test_every_relationship_raises_on_lazy_access(db_session: AsyncSession) -> None:
    """Walks the mapper registry: a new relationship without lazy='raise' fails here."""
    await seed_one_of_each(db_session)
    checked = 0
    for mapper in Base.registry.mappers:
        # Any row will do (other tests may have committed some): lazy access raises on each.
        obj = (await db_session.scalars(select(mapper.class_).limit(1))).one()
        for rel in mapper.relationships:
            with pytest.raises(InvalidRequestError, match="lazy='raise'"):
                getattr(obj, rel.key)
            checked += 1
    assert checked == sum(len(m.relationships) for m in Base.registry.mappers) >= 14


async def test_awaitable_attrs_cannot_sneak_a_lazy_load(db_session: AsyncSession) -> None:
    await seed_one_of_each(db_session)
    customer = (
        await db_session.scalars(select(Customer).where(Customer.email == "model-test@example.com"))
    ).one()
    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        await customer.awaitable_attrs.orders


async def test_server_sets_timestamps_and_trigger_bumps_updated_at(
    db_session: AsyncSession,
) -> None:
    await seed_one_of_each(db_session)
    variant = (await db_session.scalars(select(Variant).where(Variant.sku == SKU))).one()
    assert variant.created_at.tzinfo is not None
    before = variant.updated_at
    # now() is the transaction's start time; move the row's clock back to see the trigger act.
    await db_session.execute(
        text("UPDATE variants SET updated_at = updated_at - interval '1 hour' WHERE id = :id"),
        {"id": variant.id},
    )
    await db_session.execute(update(Variant).where(Variant.id == variant.id).values(stock_qty=5))
    after = await db_session.scalar(select(Variant.updated_at).where(Variant.id == variant.id))
    assert after == before  # reset to now() by the trigger, not left an hour behind


async def test_hybrid_in_stock_works_in_python_and_sql(db_session: AsyncSession) -> None:
    await seed_one_of_each(db_session)
    variant = (await db_session.scalars(select(Variant).where(Variant.sku == SKU))).one()
    assert variant.in_stock is True
    mine = Variant.sku == SKU
    assert (await db_session.scalars(select(Variant.sku).where(mine, Variant.in_stock))).all() == [
        SKU
    ]
    variant.stock_qty = 0
    await db_session.flush()
    assert variant.in_stock is False
    assert (await db_session.scalars(select(Variant.sku).where(mine, Variant.in_stock))).all() == []


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        ("UPDATE variants SET stock_qty = -1 WHERE sku = 'KETTLE-MT-1'",
         "ck_variants_stock_qty_non_negative"),
        ("UPDATE variants SET price_cents = -1 WHERE sku = 'KETTLE-MT-1'",
         "ck_variants_price_cents_non_negative"),
        ("UPDATE order_items SET qty = 0 WHERE order_id IN "
         "(SELECT id FROM orders WHERE order_ref = 'model-test-1')",
         "ck_order_items_qty_positive"),
        ("UPDATE stock_reservations SET qty = 0 WHERE order_ref = 'model-test-1'",
         "ck_stock_reservations_qty_positive"),
        ("INSERT INTO variants (product_id, sku, name, price_cents) "
         "SELECT product_id, sku, name, 1 FROM variants WHERE sku = 'KETTLE-MT-1'",
         "uq_variants_sku"),
    ],
)  # fmt: skip
async def test_constraints_are_enforced(
    db_session: AsyncSession, statement: str, constraint: str
) -> None:
    await seed_one_of_each(db_session)
    with pytest.raises(IntegrityError, match=constraint):
        async with db_session.begin_nested():
            await db_session.execute(text(statement))


async def test_deleting_a_product_cascades_in_the_database(db_session: AsyncSession) -> None:
    product = Product(name="Mug", variants=[Variant(sku="MUG-MT", name="m", price_cents=1)])
    db_session.add(product)
    await db_session.flush()
    await db_session.delete(product)  # passive_deletes: no SELECT of the variants first
    await db_session.flush()
    assert await db_session.scalar(select(Variant).where(Variant.sku == "MUG-MT")) is None
    assert inspect(product).deleted
