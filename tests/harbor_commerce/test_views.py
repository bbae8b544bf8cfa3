"""Read models (`harbor_commerce.readmodels`) against PostgreSQL, directly and through PgBouncer.

Each read model must hold exactly what the ORM path returns for the same rows,
in one statement (a projection) whatever the number of parents.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from harbor_commerce.models import Customer, Order, OrderItem, OrderStatus, Product, Tag, Variant
from harbor_commerce.readmodels import (
    CustomerHistory,
    OrderLine,
    OrderView,
    ProductCard,
    VariantLine,
)
from harbor_commerce.repositories import CustomerRepository, ProductRepository
from harbor_commerce.seed import new_order_ref, seed_customer, seed_product
from harbordb import Database, count_queries
from harbordb.errors import InvalidCursor, NotFound

SEED_PREFIX = "views"  # one test commits: conftest.py deletes rows seeded under it

HISTORY_PLAN = ("orders.items.variant.product",)


def marker() -> str:
    return uuid.uuid4().hex[:8]


async def seed_catalog(session: AsyncSession, count: int, prefix: str) -> list[Product]:
    """`count` products named ``{prefix}-NNNN`` with 2 variants and 1 or 3 tags each."""
    tags = [Tag(name=f"{prefix}-{colour}") for colour in ("red", "blue", "amber")]
    products = [
        Product(
            name=f"{prefix}-{i:04d}",
            variants=[
                Variant(sku=f"{prefix}-{i}-{size}", name=size, price_cents=100 + i, stock_qty=i % 3)
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


async def seed_history(session: AsyncSession, orders: int) -> Customer:
    """A customer with `orders` orders of 2 lines each, over two products' variants."""
    prefix = marker()
    await seed_catalog(session, 2, prefix)
    by_id = select(Variant.id).where(Variant.sku.startswith(prefix)).order_by(Variant.id)
    variants = list(await session.scalars(by_id))
    customer = Customer(email=f"{prefix}@example.com", name="Ada")
    session.add(customer)
    await session.flush()
    session.add_all(
        Order(
            customer_id=customer.id,
            order_ref=f"{prefix}-{i}",
            status=OrderStatus.PAID if i % 2 else OrderStatus.PENDING,
            total_cents=300 * i,
            items=[
                OrderItem(variant_id=variants[(i + j) % 4], qty=1 + j, unit_price_cents=100 + i)
                for j in range(2)
            ],
        )
        for i in range(orders)
    )
    await session.flush()
    session.expunge_all()
    return customer


def card_of(product: Product) -> ProductCard:
    """What `catalog_cards` must hold for an ORM product from `catalog_page`."""
    variants = tuple(
        VariantLine(v.id, v.sku, v.name, v.price_cents, v.stock_qty) for v in product.variants
    )
    return ProductCard(
        product.id, product.name, variants, tuple(sorted(t.name for t in product.tags))
    )


def history_of(customer: Customer) -> CustomerHistory:
    """What `history` must hold for an ORM customer loaded with `HISTORY_PLAN`."""
    orders = sorted(customer.orders, key=lambda o: (o.created_at, o.id), reverse=True)
    return CustomerHistory(
        customer.id,
        customer.email,
        customer.name,
        tuple(
            OrderView(
                order.id,
                order.order_ref,
                order.status,
                order.total_cents,
                order.created_at,
                tuple(
                    OrderLine(
                        item.variant_id,
                        item.variant.sku,
                        item.variant.name,
                        item.variant.product_id,
                        item.variant.product.name,
                        item.qty,
                        item.unit_price_cents,
                    )
                    for item in order.items
                ),
            )
            for order in orders
        ),
    )


# -- catalog cards ----------------------------------------------------------------


@pytest.mark.parametrize("rows", [5, 500])
async def test_catalog_cards_equal_the_orm_page_in_one_statement(
    db: Database, session: AsyncSession, rows: int
) -> None:
    prefix = marker()
    await seed_catalog(session, rows, prefix)
    products = ProductRepository(session)
    with count_queries(db) as queries:
        page = await products.catalog_cards(search=prefix, limit=500)
    assert queries.count == 1, queries.report()
    assert "array_agg" in queries.statements[0]  # variants and tags nested in the page query
    orm = await products.catalog_page(search=prefix, limit=500)
    assert len(page.items) == rows
    assert page.items == tuple(card_of(p) for p in orm.items)
    assert (page.next_cursor, page.has_more) == (orm.next_cursor, orm.has_more) == (None, False)


async def test_an_empty_catalog_page_is_one_statement(db: Database, session: AsyncSession) -> None:
    with count_queries(db) as queries:
        page = await ProductRepository(session).catalog_cards(search=f"none-{marker()}")
    assert queries.count == 1
    assert page.items == ()
    assert page.next_cursor is None


async def test_catalog_cards_walk_live_products_by_name(
    db: Database, session: AsyncSession
) -> None:
    prefix = marker()
    seeded = await seed_catalog(session, 9, prefix)
    products = ProductRepository(session)
    await products.archive(seeded[4].id)
    names: list[str] = []
    cursor = None
    while True:
        with count_queries(db) as queries:
            page = await products.catalog_cards(search=prefix, after=cursor, limit=2, total="exact")
        assert queries.count == 2  # the page (variants and tags nested), COUNT
        assert page.total == 8
        assert len(page.items) <= 2
        names += [card.name for card in page.items]
        if page.next_cursor is None:
            assert not page.has_more
            break
        cursor = page.next_cursor
    assert names == [f"{prefix}-{i:04d}" for i in range(9) if i != 4]


async def test_catalog_cursors_work_in_both_paths(session: AsyncSession) -> None:
    prefix = marker()
    await seed_catalog(session, 7, prefix)
    products = ProductRepository(session)
    first_cards = await products.catalog_cards(search=prefix, limit=3)
    first_orm = await products.catalog_page(search=prefix, limit=3)
    assert first_cards.next_cursor == first_orm.next_cursor is not None
    after_cards = await products.catalog_page(search=prefix, after=first_cards.next_cursor)
    after_orm = await products.catalog_cards(search=prefix, after=first_orm.next_cursor)
    assert after_orm.items == tuple(card_of(p) for p in after_cards.items)
    assert [card.name for card in after_orm.items] == [f"{prefix}-{i:04d}" for i in range(3, 7)]
    tampered = first_cards.next_cursor[:-2] + (
        "xx" if first_cards.next_cursor[-2:] != "xx" else "yy"
    )
    with pytest.raises(InvalidCursor):
        await products.catalog_cards(search=prefix, after=tampered)
    other_order = await products.catalog_page(search=prefix, limit=3, order_by=("-name",))
    assert other_order.next_cursor is not None
    with pytest.raises(InvalidCursor):  # a cursor of another ordering
        await products.catalog_cards(search=prefix, after=other_order.next_cursor)


async def test_catalog_cards_filter_by_tag(session: AsyncSession) -> None:
    prefix = marker()
    await seed_catalog(session, 5, prefix)
    products = ProductRepository(session)
    for tag in (f"{prefix}-blue", f"{prefix}-red", "no-such-tag"):
        cards = await products.catalog_cards(tag=tag, search=prefix)
        orm = await products.catalog_page(tag=tag, search=prefix)
        assert cards.items == tuple(card_of(p) for p in orm.items)
    blue = await products.catalog_cards(tag=f"{prefix}-blue", search=prefix)
    assert [card.name for card in blue.items] == [f"{prefix}-{i:04d}" for i in (0, 2, 4)]
    assert all(f"{prefix}-blue" in card.tags for card in blue.items)


@pytest.mark.parametrize(
    "text",
    ["%", "_", "\\", "100%", "a_b", "%' OR 1=1 --", "'; DROP TABLE products; --", "\\%"],
)
async def test_hostile_search_text_is_literal(session: AsyncSession, text: str) -> None:
    prefix = marker()
    await seed_catalog(session, 2, prefix)  # names that LIKE wildcards would match
    session.add(Product(name=f"{prefix} literal {text} here"))
    await session.flush()
    products = ProductRepository(session)
    cards = await products.catalog_cards(search=f"{prefix} literal {text}")
    assert [card.name for card in cards.items] == [f"{prefix} literal {text} here"]
    wildcard_only = await products.catalog_cards(search=f"{prefix}{text}")
    orm = await products.catalog_page(search=f"{prefix}{text}")
    assert wildcard_only.items == tuple(card_of(p) for p in orm.items) == ()


def test_read_models_are_frozen_and_slotted() -> None:
    line = VariantLine(1, "sku", "S", 100, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        line.stock_qty = 5  # type: ignore[misc]
    assert not hasattr(line, "__dict__")
    assert not line.in_stock


# -- customer history -------------------------------------------------------------


@pytest.mark.parametrize("orders", [5, 500])
async def test_history_equals_the_orm_graph_in_one_statement(
    db: Database, session: AsyncSession, orders: int
) -> None:
    customer = await seed_history(session, orders)
    customers = CustomerRepository(session)
    with count_queries(db) as queries:
        history = await customers.history(customer.id)
    assert queries.count == 1, queries.report()
    orm = await customers.get(customer.id, load=HISTORY_PLAN)
    assert history == history_of(orm)
    assert len(history.orders) == orders
    assert all(len(order.lines) == 2 for order in history.orders)
    assert {order.status for order in history.orders} == {OrderStatus.PAID, OrderStatus.PENDING}


async def test_history_of_a_customer_without_orders_is_one_statement(
    db: Database, session: AsyncSession
) -> None:
    customer = Customer(email=f"{marker()}@example.com", name="Lin")
    session.add(customer)
    await session.flush()
    with count_queries(db) as queries:
        history = await CustomerRepository(session).history(customer.id)
    assert queries.count == 1
    assert history == CustomerHistory(customer.id, customer.email, "Lin", ())


async def test_history_of_an_unknown_customer_is_not_found(
    db: Database, session: AsyncSession
) -> None:
    with count_queries(db) as queries, pytest.raises(NotFound, match="Customer 987654321"):
        await CustomerRepository(session).history(987654321)
    assert queries.count == 1


async def test_history_reads_through_the_unit_of_work(db: Database) -> None:
    """Committed rows, real units of work: read only, a timeout, and row-level
    security, which shows a customer their own history and no one else's."""
    product = await seed_product(db, SEED_PREFIX, [5, 5])
    mine, theirs = await seed_customer(db, SEED_PREFIX), await seed_customer(db, SEED_PREFIX)
    async with db.unit_of_work() as uow:
        uow.session.add(
            Order(
                customer_id=mine.id,
                order_ref=new_order_ref(SEED_PREFIX),
                items=[
                    OrderItem(variant_id=v.id, qty=2, unit_price_cents=100)
                    for v in product.variants
                ],
            )
        )
        await uow.commit()
    claims = {"sub": str(mine.id)}
    async with db.unit_of_work(
        role="authenticated", claims=claims, read_only=True, statement_timeout=5
    ) as uow:
        history = await uow.customers.history(mine.id)
        with pytest.raises(NotFound):
            await uow.customers.history(theirs.id)
    (order,) = history.orders
    assert [line.sku for line in order.lines] == [v.sku for v in product.variants]
    assert {line.product_name for line in order.lines} == {product.name}
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.customers.history(mine.id) == history
        assert (await uow.customers.history(theirs.id)).orders == ()
