"""The statement counter and the per-parent relationship load record."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import lazyload, selectinload

from harbor_commerce.models import Customer, Order
from harbordb import Database, assert_max_queries, count_queries


async def seed(session: AsyncSession, customers: int) -> None:
    session.add_all(
        Customer(
            email=f"qc{i}@example.com",
            name=f"c{i}",
            orders=[Order(order_ref=f"qc-{i}-{j}") for j in range(2)],
        )
        for i in range(customers)
    )
    await session.flush()
    session.expunge_all()


async def test_forced_lazy_loads_are_counted_per_parent(
    database: Database, db_session: AsyncSession
) -> None:
    await seed(db_session, 10)
    with count_queries(database) as queries:
        query = select(Customer).where(Customer.email.like("qc%"))
        customers = (await db_session.scalars(query.options(lazyload(Customer.orders)))).all()
        for customer in customers:
            await customer.awaitable_attrs.orders
    assert queries.count == 11
    assert queries.loads_by_attribute() == {"Customer.orders": 10}
    location = queries.relationship_loads[0].location
    assert location.startswith(__file__), location  # the line that awaited, not SQLAlchemy's


async def test_load_plans_are_not_per_parent_loads(
    database: Database, db_session: AsyncSession
) -> None:
    await seed(db_session, 10)
    with count_queries(database) as queries:
        query = select(Customer).where(Customer.email.like("qc%"))
        customers = (await db_session.scalars(query.options(selectinload(Customer.orders)))).all()
    assert sum(len(c.orders) for c in customers) == 20
    assert queries.count == 2
    assert queries.relationship_loads == []


async def test_assert_max_queries_lists_the_statements(
    database: Database, db_session: AsyncSession
) -> None:
    await db_session.execute(select(1))  # opens the test's savepoint outside the count

    async def two_statements() -> None:
        with assert_max_queries(database, 1):
            await db_session.execute(select(1))
            await db_session.execute(select(Customer.id).limit(1))

    with pytest.raises(AssertionError, match=r"at most 1 statement\(s\), got 2 stat") as caught:
        await two_statements()
    assert "FROM customers" in str(caught.value)
    with assert_max_queries(database, 1) as queries:
        await db_session.execute(select(1))
    assert queries.count == 1


async def test_counter_ignores_other_engines(database: Database, db_session: AsyncSession) -> None:
    other = Database(str(database.engine.url.render_as_string(False)))
    try:
        with count_queries(other) as queries:
            await db_session.execute(select(1))
        assert queries.count == 0
    finally:
        await other.dispose()


async def _load_orders_in_a_helper(customers: list[Customer]) -> None:
    for customer in customers:
        await customer.awaitable_attrs.orders  # the line the report must name


async def test_location_is_the_innermost_awaiting_line(
    database: Database, db_session: AsyncSession
) -> None:
    await seed(db_session, 2)
    query = select(Customer).where(Customer.email.like("qc%")).options(lazyload(Customer.orders))
    customers = list((await db_session.scalars(query)).all())
    with count_queries(database) as queries:
        await _load_orders_in_a_helper(customers)
    expected_line = _load_orders_in_a_helper.__code__.co_firstlineno + 2
    assert {load.location for load in queries.relationship_loads} == {f"{__file__}:{expected_line}"}
