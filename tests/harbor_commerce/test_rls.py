"""Row-level security with real roles: a customer sees and changes only their own rows.

The policies (migration 0002) apply to the roles a unit of work assumes, so
these tests commit real rows (unique per test, deleted afterwards) and read
them back through `role="authenticated"` units of work, directly and through
PgBouncer in transaction mode.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from alembic import command
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from harbor_commerce.models import Customer, Order, OrderItem, Product, StockReservation, Variant
from harbordb import Database, count_queries
from harbordb.db import normalize_url
from harbordb.errors import ConfigurationError, PermissionDenied
from harbordb.testing.cluster import PostgresCluster
from harbordb.testing.plugin import alembic_config
from harbordb.uow import UnitOfWork

HARBOR_ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


@dataclass
class Shop:
    customers: tuple[int, int]  # A, B
    orders: tuple[int, int]  # A's, B's
    reservations: tuple[int, int]
    product: int
    variant: int


@pytest.fixture
async def shop(database: Database) -> AsyncIterator[Shop]:
    """Customers A and B, each with an order (one item) and a reservation, committed."""
    tag = uuid.uuid4().hex
    async with database.unit_of_work() as uow:
        product = Product(name=f"rls-{tag}")
        variant = Variant(sku=f"rls-{tag}", name="v", price_cents=500, stock_qty=5)
        product.variants = [variant]
        customers = [Customer(email=f"rls-{who}-{tag}@example.com", name=who) for who in "AB"]
        uow.session.add_all([product, *customers])
        await uow.flush()
        orders = [
            Order(customer_id=c.id, order_ref=f"rls-{c.name}-{tag}", total_cents=500)
            for c in customers
        ]
        reservations = [
            StockReservation(
                variant_id=variant.id,
                customer_id=c.id,
                order_ref=f"rls-{c.name}-{tag}",
                qty=1,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
            for c in customers
        ]
        uow.session.add_all([*orders, *reservations])
        await uow.flush()
        uow.session.add_all(
            [
                OrderItem(order_id=o.id, variant_id=variant.id, qty=1, unit_price_cents=500)
                for o in orders
            ]
        )
        await uow.commit()
    yield Shop(
        customers=(customers[0].id, customers[1].id),
        orders=(orders[0].id, orders[1].id),
        reservations=(reservations[0].id, reservations[1].id),
        product=product.id,
        variant=variant.id,
    )
    async with database.unit_of_work() as uow:
        ids = [c.id for c in customers]
        await uow.session.execute(delete(Order).where(Order.customer_id.in_(ids)))
        await uow.session.execute(delete(Customer).where(Customer.id.in_(ids)))
        await uow.session.execute(delete(Product).where(Product.id == product.id))
        await uow.commit()


@pytest.fixture
def db(one_connection_db: Database) -> Database:
    """`one_connection_db`: settings that outlived their transaction would leak."""
    return one_connection_db


def _as(db: Database, customer_id: int, **options: Any) -> UnitOfWork:
    return db.unit_of_work(role="authenticated", claims={"sub": str(customer_id)}, **options)


async def _visible(uow: UnitOfWork, shop: Shop) -> dict[str, set[int]]:
    """Which of the shop's rows this unit of work can see, table by table."""

    async def ids(stmt: Any) -> set[int]:
        return set((await uow.session.execute(stmt)).scalars())

    return {
        "customers": await ids(select(Customer.id).where(Customer.id.in_(shop.customers))),
        "orders": await ids(select(Order.id).where(Order.id.in_(shop.orders))),
        "order_items": await ids(
            select(OrderItem.order_id).where(OrderItem.order_id.in_(shop.orders))
        ),
        "reservations": await ids(
            select(StockReservation.id).where(StockReservation.id.in_(shop.reservations))
        ),
        "products": await ids(select(Product.id).where(Product.id == shop.product)),
        "variants": await ids(select(Variant.id).where(Variant.id == shop.variant)),
    }


def _own(shop: Shop, who: int) -> dict[str, set[int]]:
    return {
        "customers": {shop.customers[who]},
        "orders": {shop.orders[who]},
        "order_items": {shop.orders[who]},
        "reservations": {shop.reservations[who]},
        "products": {shop.product},
        "variants": {shop.variant},
    }


NOTHING_OWNED: dict[str, set[int]] = {
    "customers": set(),
    "orders": set(),
    "order_items": set(),
    "reservations": set(),
}


async def _identity(uow: UnitOfWork) -> tuple[str, str | None]:
    row = await uow.session.execute(
        text("SELECT current_user, current_setting('request.jwt.claims', true)")
    )
    user, claims = row.one()
    return user, claims or None


async def test_a_customer_reads_only_their_own_rows(db: Database, shop: Shop) -> None:
    for who in (0, 1):
        async with _as(db, shop.customers[who]) as uow:
            assert await _visible(uow, shop) == _own(shop, who)
            assert await uow.orders.get_or_none(shop.orders[1 - who]) is None
            assert (await uow.orders.get(shop.orders[who])).id == shop.orders[who]
    # Nothing outlives the transaction: the next unit of work is the login role again.
    async with db.unit_of_work() as uow:
        assert await _identity(uow) == ("postgres", None)
        everything = {k: v | _own(shop, 1)[k] for k, v in _own(shop, 0).items()}
        assert await _visible(uow, shop) == everything


async def test_a_customer_cannot_change_another_customers_rows(
    db: Database, database: Database, shop: Shop
) -> None:
    a, b = shop.customers
    async with _as(db, a) as uow:
        theirs = await uow.session.execute(
            update(Order).where(Order.id == shop.orders[1]).values(total_cents=1)
        )
        mine = await uow.session.execute(
            update(Order).where(Order.id == shop.orders[0]).values(total_cents=2)
        )
        gone = await uow.session.execute(
            delete(StockReservation).where(StockReservation.id == shop.reservations[1])
        )
        assert (theirs.rowcount, mine.rowcount, gone.rowcount) == (0, 1, 0)  # type: ignore[attr-defined]
        await uow.commit()

    async def order_for_b() -> None:
        async with _as(db, a) as uow:
            uow.session.add(Order(customer_id=b, order_ref=f"rls-forged-{uuid.uuid4().hex}"))
            await uow.commit()

    with pytest.raises(PermissionDenied) as caught:  # the policy's WITH CHECK
        await order_for_b()
    assert caught.value.sqlstate == "42501"

    async def move_my_order_to_b() -> None:
        async with _as(db, a) as uow:
            await uow.session.execute(
                update(Order).where(Order.id == shop.orders[0]).values(customer_id=b)
            )

    with pytest.raises(PermissionDenied):
        await move_my_order_to_b()

    async with database.unit_of_work(read_only=True) as uow:
        totals = await uow.session.execute(
            select(Order.id, Order.total_cents, Order.customer_id).where(Order.id.in_(shop.orders))
        )
        assert sorted(tuple(row) for row in totals) == [
            (shop.orders[0], 2, a),
            (shop.orders[1], 500, b),
        ]
        kept = await uow.session.execute(
            select(func.count()).where(StockReservation.id == shop.reservations[1])
        )
        assert kept.scalar_one() == 1


async def test_anonymous_reads_the_catalog_only(db: Database, shop: Shop) -> None:
    async with db.unit_of_work(role="anon") as uow:
        assert await _identity(uow) == ("harbordb_anon", None)
        variant = await uow.session.execute(select(Variant.id).where(Variant.id == shop.variant))
        assert variant.scalar_one() == shop.variant

    with pytest.raises(PermissionDenied):
        async with db.unit_of_work(role="anon") as uow:
            await uow.session.execute(select(Order.id).where(Order.id.in_(shop.orders)))


async def test_authenticated_without_claims_sees_nothing_owned(db: Database, shop: Shop) -> None:
    async with db.unit_of_work(role="authenticated") as uow:
        visible = await _visible(uow, shop)
    assert visible == {**NOTHING_OWNED, "products": {shop.product}, "variants": {shop.variant}}


HOSTILE_SUBS = [
    "' OR '1'='1",
    "1 OR 1=1",
    "{a}; DROP TABLE orders; --",
    "{a}'; RESET ROLE; --",
    "{a}\\",
    "\\'; SELECT pg_sleep(10); --",
    '{a}" , "sub": "{b}',
    "$$ || (SELECT min(id) FROM customers) || $$",
    "{a} UNION SELECT id FROM orders",
    " {a}",
    "-{a}",
    "{a}.0",
    "99999999999999999999999",
]


@pytest.mark.parametrize("template", HOSTILE_SUBS)
async def test_hostile_claims_change_nothing(
    db: Database, database: Database, shop: Shop, template: str
) -> None:
    a, b = shop.customers
    sub = template.format(a=a, b=b)
    claims = {"sub": sub, "role": "postgres", "x'); RESET ROLE; --": ["\\", "'", ";", '"']}
    async with db.unit_of_work(role="authenticated", claims=claims) as uow:
        user, stored = await _identity(uow)
        assert user == "harbordb_authenticated"
        assert stored is not None
        assert json.loads(stored) == claims  # stored verbatim
        assert await _visible(uow, shop) == {
            **NOTHING_OWNED,
            "products": {shop.product},
            "variants": {shop.variant},
        }
    async with database.unit_of_work(read_only=True) as uow:  # and the schema is intact
        assert (
            await uow.session.execute(select(func.count(Order.id)).where(Order.id.in_(shop.orders)))
        ).scalar_one() == 2


async def test_hostile_extra_claims_do_not_widen_a_real_customer(db: Database, shop: Shop) -> None:
    claims = {
        "sub": str(shop.customers[0]),
        "role": "postgres",
        "customer_id": str(shop.customers[1]),
        "'; SET ROLE postgres; --": "\\'\"",
    }
    async with db.unit_of_work(role="authenticated", claims=claims) as uow:
        assert await _visible(uow, shop) == _own(shop, 0)


async def test_concurrent_customers_never_see_each_other(db: Database, shop: Shop) -> None:
    """Interleaved units of work share server connections through the pooler, not settings."""

    async def look(who: int) -> None:
        for _ in range(5):
            async with _as(db, shop.customers[who]) as uow:
                assert await _visible(uow, shop) == _own(shop, who)
                await asyncio.sleep(0)

    await asyncio.gather(*(look(i % 2) for i in range(4)))


@pytest.mark.parametrize(
    "role",
    ["admin", "postgres", "harbordb_authenticated", "authenticated; RESET ROLE", "Authenticated"],
)
async def test_an_unknown_role_is_refused_before_any_sql(database: Database, role: str) -> None:
    with (
        count_queries(database) as queries,
        pytest.raises(ConfigurationError, match="unknown role"),
    ):
        database.unit_of_work(role=role, claims={"sub": "1"})
    assert queries.count == 0


# -- the migration ---------------------------------------------------------------

OWNED_TABLES = {"customers", "orders", "order_items", "stock_reservations"}


@pytest.fixture
async def scratch_url(pg_cluster: PostgresCluster) -> AsyncIterator[str]:
    """A database of its own, to migrate up and down without disturbing the others."""
    name = f"harbordb_rls_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(
        normalize_url(pg_cluster.admin_url),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"statement_cache_size": 0},
    )
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield normalize_url(pg_cluster.url).set(database=name).render_as_string(False)
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def _security(url: str) -> dict[str, set[str]]:
    """Policies, tables with row-level security, the roles' grants, the helper, the roles."""
    queries = {
        "policies": "SELECT tablename || '.' || policyname FROM pg_policies",
        "rls": "SELECT relname FROM pg_class WHERE relrowsecurity",
        "grants": (
            "SELECT grantee || ' ' || privilege_type || ' ' || table_name "
            "FROM information_schema.role_table_grants WHERE grantee LIKE 'harbordb%'"
        ),
        "functions": "SELECT proname FROM pg_proc WHERE proname LIKE 'harbordb_current%'",
        "roles": "SELECT rolname FROM pg_roles WHERE rolname LIKE 'harbordb%'",
    }
    engine = create_async_engine(url, poolclass=NullPool, connect_args={"statement_cache_size": 0})
    try:
        async with engine.connect() as connection:
            return {
                key: set((await connection.execute(text(sql))).scalars())
                for key, sql in queries.items()
            }
    finally:
        await engine.dispose()


async def test_migration_0002_upgrades_downgrades_and_upgrades_again(
    scratch_url: str, migrated_url: str
) -> None:
    """`migrated_url`: another database using the roles, so the downgrade must keep them."""
    config = alembic_config(scratch_url, HARBOR_ALEMBIC_INI)

    await anyio.to_thread.run_sync(command.upgrade, config, "head")
    up = await _security(scratch_url)
    assert up["policies"] == {f"{table}.{table}_own" for table in OWNED_TABLES}
    assert up["rls"] == OWNED_TABLES
    assert "harbordb_anon SELECT products" in up["grants"]
    assert "harbordb_authenticated UPDATE orders" in up["grants"]
    assert not any(g.startswith("harbordb_anon") and "orders" in g for g in up["grants"])
    assert up["functions"] == {"harbordb_current_customer_id"}
    assert up["roles"] == {"harbordb_anon", "harbordb_authenticated"}

    await anyio.to_thread.run_sync(command.downgrade, config, "0001")
    down = await _security(scratch_url)
    assert down == {
        "policies": set(),
        "rls": set(),
        "grants": set(),
        "functions": set(),
        # Roles belong to the cluster, and the database at `migrated_url` still uses them.
        "roles": {"harbordb_anon", "harbordb_authenticated"},
    }

    await anyio.to_thread.run_sync(command.upgrade, config, "head")  # the roles exist: fine
    assert await _security(scratch_url) == up
