"""The N+1 detector of a unit of work: `awaitable_attrs` over many parents is caught."""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import lazyload, selectinload
from sqlalchemy.sql.base import ExecutableOption

from harbor_commerce.models import Customer, Order, OrderItem, Product, Variant
from harbordb import Database, count_queries
from harbordb.errors import ConfigurationError, LazyLoadDetected, NPlusOneWarning
from harbordb.nplusone import parse_nplusone_mode


def _line_of(marker: str) -> int:
    """The line of this file that carries `marker` in a comment."""
    lines = Path(__file__).read_text().splitlines()
    (line,) = [n for n, text in enumerate(lines, 1) if text.rstrip().endswith(f"# {marker}")]
    return line


@dataclass
class Data:
    customers: list[int]
    orders: list[int]


@pytest.fixture
async def data(database: Database, db_connection: AsyncConnection) -> Data:
    """Three customers with two orders of two items each, inside the outer transaction."""
    async with database.unit_of_work(connection=db_connection, nplusone="off") as uow:
        tag = uuid.uuid4().hex
        product = Product(name="nplusone")
        product.variants = [
            Variant(sku=f"np-{i}-{tag}", name=str(i), price_cents=1) for i in range(2)
        ]
        customers = [Customer(email=f"np-{i}-{tag}@example.com", name=str(i)) for i in range(3)]
        uow.session.add_all([product, *customers])
        await uow.flush()
        orders = [
            Order(customer_id=c.id, order_ref=f"np-{c.id}-{n}") for c in customers for n in range(2)
        ]
        uow.session.add_all(orders)
        await uow.flush()
        uow.session.add_all(
            [
                OrderItem(order_id=o.id, variant_id=v.id, qty=1, unit_price_cents=1)
                for o in orders
                for v in product.variants
            ]
        )
        await uow.commit()
    return Data([c.id for c in customers], [o.id for o in orders])


def _customers(data: Data, *options: ExecutableOption) -> Select[Customer]:
    return (
        select(Customer)
        .where(Customer.id.in_(data.customers))
        .order_by(Customer.id)
        .options(*options)
    )


async def test_raise_mode_stops_the_second_parents_load(
    database: Database, db_connection: AsyncConnection, data: Data
) -> None:
    loaded = []
    async with database.unit_of_work(connection=db_connection, nplusone="raise") as uow:
        customers = (await uow.session.scalars(_customers(data, lazyload(Customer.orders)))).all()
        caught: LazyLoadDetected | None = None
        with count_queries(database) as queries:
            try:
                for customer in customers:
                    loaded.append(await customer.awaitable_attrs.orders)  # raise: here
            except LazyLoadDetected as exc:
                caught = exc
    assert caught is not None
    assert len(loaded) == 1  # the first parent's load is tolerated
    assert queries.count == 1  # the second was refused before its statement was sent
    message = str(caught)
    assert "Customer.orders" in message
    assert f"{__file__}:{_line_of('raise: here')}" in message


async def test_warn_mode_warns_once_per_attribute_at_the_callers_line(
    database: Database, db_connection: AsyncConnection, data: Data
) -> None:
    async with database.unit_of_work(connection=db_connection, nplusone="warn") as uow:
        customers = (await uow.session.scalars(_customers(data, lazyload(Customer.orders)))).all()
        with pytest.warns(NPlusOneWarning, match=r"Customer\.orders") as record:
            orders = [await c.awaitable_attrs.orders for c in customers]  # warn: here
    assert [len(o) for o in orders] == [2, 2, 2]  # warn mode lets every load run
    assert len(record) == 1
    assert (record[0].filename, record[0].lineno) == (__file__, _line_of("warn: here"))


async def test_the_benchmarks_nplus1_graph_walk_is_caught(
    database: Database, db_connection: AsyncConnection, data: Data
) -> None:
    """benchmarks W3 `nplus1`: one customer, then each level awaited one parent at a time."""
    plan = lazyload(Customer.orders).lazyload(Order.items)
    plan = plan.lazyload(OrderItem.variant).lazyload(Variant.product)
    statement = select(Customer).where(Customer.id == data.customers[0]).options(plan)
    async with database.unit_of_work(connection=db_connection, nplusone="raise") as uow:
        customer = (await uow.session.scalars(statement)).one()

        async def walk() -> None:
            for order in await customer.awaitable_attrs.orders:
                for item in await order.awaitable_attrs.items:
                    await (await item.awaitable_attrs.variant).awaitable_attrs.product

        # The first order's second item is the second parent whose variant is loaded.
        with pytest.raises(LazyLoadDetected, match=r"OrderItem\.variant loaded one parent"):
            await walk()


async def test_one_parent_and_load_plans_are_not_reported(
    database: Database, db_connection: AsyncConnection, data: Data
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with database.unit_of_work(connection=db_connection, nplusone="raise") as uow:
            one = (await uow.session.scalars(_customers(data, lazyload(Customer.orders)))).first()
            assert one is not None
            assert len(await one.awaitable_attrs.orders) == 2
        async with database.unit_of_work(connection=db_connection, nplusone="raise") as uow:
            plan = selectinload(Customer.orders).selectinload(Order.items)
            customers = (await uow.session.scalars(_customers(data, plan))).all()
            assert [len(c.orders) for c in customers] == [2, 2, 2]


async def _walk(session: AsyncSession, customer_ids: list[int]) -> int:
    """The N+1 pattern: each customer's orders awaited one customer at a time."""
    stmt = _customers(Data(customer_ids, []), lazyload(Customer.orders))
    customers = (await session.scalars(stmt)).all()
    return sum([len(await customer.awaitable_attrs.orders) for customer in customers])


async def test_off_other_units_of_work_and_plain_sessions_are_unaffected(
    database: Database, db_connection: AsyncConnection, data: Data
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with database.unit_of_work(connection=db_connection, nplusone="off") as uow:
            assert await _walk(uow.session, data.customers) == 6
        # Counts are per unit of work: one parent in each of two is no N+1.
        for customer in data.customers[:2]:
            async with database.unit_of_work(connection=db_connection, nplusone="raise") as uow:
                assert await _walk(uow.session, [customer]) == 2
        # The detector watches its own session only, not every session.
        async with database.unit_of_work(nplusone="raise"):
            plain = AsyncSession(bind=db_connection, join_transaction_mode="create_savepoint")
            try:
                assert await _walk(plain, data.customers) == 6
            finally:
                await plain.close()


@pytest.mark.parametrize(
    ("value", "mode"),
    [("raise", "raise"), (" WARN ", "warn"), ("off", None), ("", None), (None, None)],
)
def test_modes_from_configuration(value: str | None, mode: str | None) -> None:
    assert parse_nplusone_mode(value) == mode


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="nplusone"):
        parse_nplusone_mode("loud")


async def test_the_environment_sets_the_default_and_a_unit_of_work_overrides_it(
    migrated_url: str, data: Data, db_connection: AsyncConnection
) -> None:
    """HARBORDB_NPLUSONE=raise turns the detector on for every unit of work."""
    async with Database(migrated_url, environ={"HARBORDB_NPLUSONE": "raise"}) as db:
        assert db.settings.nplusone == "raise"
        async with db.unit_of_work(connection=db_connection) as uow:
            query = _customers(data, lazyload(Customer.orders))
            customers = (await uow.session.scalars(query)).all()
            with pytest.raises(LazyLoadDetected, match=r"Customer\.orders"):
                [await customer.awaitable_attrs.orders for customer in customers]  # 2nd raises
        async with db.unit_of_work(connection=db_connection, nplusone="off") as uow:
            customers = (await uow.session.scalars(query)).all()
            for customer in customers:
                await customer.awaitable_attrs.orders  # off: loads run, nothing raised
            assert all(len(c.orders) == 2 for c in customers)
