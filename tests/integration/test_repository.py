"""`Repository[ModelT]` against PostgreSQL, directly and through PgBouncer.

Every public method's statement count is asserted. Each test runs in an outer
transaction that is rolled back; the session's savepoint is opened before
counting starts, so counts hold only the repository's own statements.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, text, true
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from harbor_commerce.models import Customer, Order, OrderItem, Product, Tag, Variant
from harbor_commerce.repositories import (
    CustomerRepository,
    OrderRepository,
    ProductRepository,
    VariantRepository,
)
from harbordb import Database, count_queries
from harbordb.errors import (
    CheckViolation,
    ConfigurationError,
    Conflict,
    ForeignKeyViolation,
    InvalidCursor,
    NotFound,
)
from harbordb.repository import Repository, any_of, contains, escape_like

# -- helpers (the `db` and `session` fixtures are in conftest.py) -----------------


def marker() -> str:
    return uuid.uuid4().hex[:8]


async def seed_products(
    session: AsyncSession, count: int, *, variants: int = 2, tags: int = 2, prefix: str = ""
) -> list[int]:
    """`count` products with variants and tags; the session is emptied afterwards."""
    prefix = prefix or marker()
    tag_rows = [Tag(name=f"{prefix}-tag-{i}") for i in range(tags)]
    products = [
        Product(
            name=f"{prefix}-{i:04d}",
            variants=[
                Variant(sku=f"{prefix}-{i}-{j}", name=f"v{j}", price_cents=100 * j)
                for j in range(variants)
            ],
            tags=tag_rows,
        )
        for i in range(count)
    ]
    session.add_all(products)
    await session.flush()
    ids = [p.id for p in products]
    session.expunge_all()  # repository reads must load from the database
    return ids


async def seed_orders(session: AsyncSession, count: int, *, items: int = 2) -> list[int]:
    prefix = marker()
    customer = Customer(email=f"{prefix}@example.com", name="Ada")
    product = Product(
        name=f"{prefix}-p",
        variants=[
            Variant(sku=f"{prefix}-{j}", name=f"v{j}", price_cents=100) for j in range(items)
        ],
    )
    session.add_all([customer, product])
    await session.flush()
    orders = [
        Order(
            customer_id=customer.id,
            order_ref=f"{prefix}-{i}",
            items=[
                OrderItem(variant_id=v.id, qty=1, unit_price_cents=100) for v in product.variants
            ],
        )
        for i in range(count)
    ]
    session.add_all(orders)
    await session.flush()
    ids = [o.id for o in orders]
    session.expunge_all()
    return ids


# -- class definition -------------------------------------------------------------


def test_a_load_path_naming_no_relationship_fails_at_class_definition() -> None:
    with pytest.raises(ConfigurationError) as caught:

        class BadOrders(Repository[Order]):
            model = Order
            load = ("items.varient.product",)

    message = str(caught.value)
    assert "BadOrders.load" in message
    assert "'items.varient.product'" in message
    assert "OrderItem has no relationship 'varient'" in message
    assert "variant" in message  # lists what exists


def test_a_load_path_through_a_column_fails_at_class_definition() -> None:
    with pytest.raises(ConfigurationError, match=r"Product has no relationship 'name'"):

        class BadProducts(Repository[Product]):
            model = Product
            load = ("name",)


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"order_by": ("-nme",)}, r"BadRepo.order_by: Variant has no column 'nme'"),
        ({"upsert_on": ("name",)}, r"no unique constraint on \(name\)"),
        ({"upsert_on": ("skew",)}, r"Variant has no column\(s\) 'skew'"),
        ({"search_columns": ("price_cents",)}, r"'price_cents' is not a string column"),
        ({"load": ("",)}, r"relationship paths or loader options"),
        ({"model": object}, r"must be a mapped class"),
    ],
)
def test_bad_class_attributes_fail_at_definition(attributes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        type("BadRepo", (Repository,), {"model": Variant, **attributes})


def test_an_abstract_repository_has_no_checks_and_cannot_be_used() -> None:
    class Base_(Repository[Any]):
        max_limit = 100

    with pytest.raises(TypeError, match="abstract"):
        Base_(None)  # type: ignore[arg-type]


# -- load plans -------------------------------------------------------------------


async def test_default_plan_loads_nested_paths_in_two_statements(
    db: Database, session: AsyncSession
) -> None:
    (order_id,) = await seed_orders(session, 1, items=3)
    orders = OrderRepository(session)
    with count_queries(db) as queries:
        order = await orders.get(order_id)
    assert queries.count == 2, queries.report()
    with count_queries(db) as after:
        names = [item.variant.product.name for item in order.items]
    assert after.count == 0
    assert len(names) == 3


async def test_relationships_outside_the_plan_raise_on_access(session: AsyncSession) -> None:
    (order_id,) = await seed_orders(session, 1)
    order = await OrderRepository(session).get(order_id)
    variant = order.items[0].variant
    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        _ = order.customer
    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        _ = variant.reservations
    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        _ = variant.product.tags


async def test_a_per_call_plan_replaces_the_default(db: Database, session: AsyncSession) -> None:
    (order_id,) = await seed_orders(session, 1)
    orders = OrderRepository(session)
    with count_queries(db) as queries:
        bare = await orders.get(order_id, load=())
    assert queries.count == 1
    with pytest.raises(InvalidRequestError):
        _ = bare.items
    session.expunge_all()
    with count_queries(db) as queries:
        order = await orders.get(order_id, load=("customer", "items"))
    assert queries.count == 2
    assert order.customer.name == "Ada"
    with pytest.raises(InvalidRequestError):
        _ = order.items[0].variant


async def test_a_per_call_plan_naming_no_relationship_is_refused(session: AsyncSession) -> None:
    with pytest.raises(ConfigurationError, match="Order has no relationship 'lines'"):
        await OrderRepository(session).get(1, load=("lines",))


async def test_loader_options_can_join_a_plan(db: Database, session: AsyncSession) -> None:
    (product_id,) = await seed_products(session, 1, variants=3)
    products = ProductRepository(session)
    with count_queries(db) as queries:
        product = await products.get(product_id, load=(selectinload(Product.variants),))
    assert queries.count == 2
    assert len(product.variants) == 3
    with pytest.raises(InvalidRequestError):
        _ = product.tags


async def test_a_later_read_fills_relationships_of_an_object_already_loaded(
    session: AsyncSession,
) -> None:
    (order_id,) = await seed_orders(session, 1)
    orders = OrderRepository(session)
    bare = await orders.get(order_id, load=())
    full = await orders.get(order_id)
    assert full is bare
    assert len(full.items) == 2


# -- reads ------------------------------------------------------------------------


async def test_get_of_a_missing_row_raises_not_found_naming_model_and_id(
    db: Database, session: AsyncSession
) -> None:
    products = ProductRepository(session)
    with count_queries(db) as queries, pytest.raises(NotFound) as caught:
        await products.get(987654321)
    assert str(caught.value) == "Product 987654321 not found"
    assert queries.count == 1


async def test_get_or_none(db: Database, session: AsyncSession) -> None:
    (product_id,) = await seed_products(session, 1)
    products = ProductRepository(session)
    with count_queries(db) as queries:
        assert await products.get_or_none(987654321) is None
    assert queries.count == 1
    with count_queries(db) as queries:
        found = await products.get_or_none(product_id)
    assert queries.count == 3  # products, variants, tags
    assert found is not None
    assert len(found.variants) == 2


@pytest.mark.parametrize("rows", [5, 500])
async def test_get_many_is_one_any_statement_in_input_order(
    db: Database, session: AsyncSession, rows: int
) -> None:
    ids = await seed_products(session, rows)
    wanted = [*reversed(ids), 987654321, ids[0]]
    products = ProductRepository(session)
    with count_queries(db) as queries:
        found = await products.get_many(wanted)
    assert queries.count == 3, queries.report()  # products, variants, tags: for 5 and for 500
    assert "= ANY" in queries.statements[0]
    assert " IN (" not in queries.statements[0]
    assert [p.id for p in found] == list(reversed(ids))
    assert all(len(p.variants) == 2 for p in found)
    with count_queries(db) as queries:
        assert await products.get_many([]) == []
    assert queries.count == 0


@pytest.mark.parametrize("rows", [5, 500])
async def test_list_statement_count_does_not_grow_with_rows(
    db: Database, session: AsyncSession, rows: int
) -> None:
    ids = await seed_orders(session, rows)
    orders = OrderRepository(session)
    with count_queries(db) as queries:
        found = await orders.list(any_of(Order.id, ids))  # committed rows of other tests stay out
    assert queries.count == 2, queries.report()
    assert len(found) == rows
    with count_queries(db) as lazy:
        variants = {item.variant.product.id for order in found for item in order.items}
    assert lazy.count == 0
    assert len(variants) == 1


async def test_list_filters_orders_and_limits(db: Database, session: AsyncSession) -> None:
    prefix = marker()
    await seed_products(session, 3, variants=4, prefix=prefix)
    variants = VariantRepository(session)
    with count_queries(db) as queries:
        found = await variants.list(
            Variant.price_cents >= 100,
            Variant.sku.startswith(prefix),
            name="v3",
            order_by=("-sku",),
            limit=2,
        )
    assert queries.count == 1  # the product comes in the same statement (joinedload)
    assert [v.sku for v in found] == [f"{prefix}-2-3", f"{prefix}-1-3"]
    assert found[0].product.name == f"{prefix}-0002"


async def test_list_accepts_attributes_and_expressions_as_ordering(session: AsyncSession) -> None:
    prefix = marker()
    await seed_products(session, 3, prefix=prefix)
    products = ProductRepository(session)
    by_attribute = await products.list(
        Product.name.startswith(prefix), order_by=[Product.id.desc()]
    )
    by_expression = await products.list(
        Product.name.startswith(prefix), order_by=[func.lower(Product.name).desc()]
    )
    assert [p.name for p in by_attribute] == [p.name for p in by_expression]
    assert [p.name[-1] for p in by_attribute] == ["2", "1", "0"]


async def test_equality_filters_cover_hybrids_and_null(session: AsyncSession) -> None:
    prefix = marker()
    ids = await seed_products(session, 3, prefix=prefix)
    products = ProductRepository(session)
    await products.archive(ids[0])
    live = await products.list(Product.name.startswith(prefix), archived_at=None)
    archived = await products.list(Product.name.startswith(prefix), is_archived=True)
    assert [p.id for p in live] == ids[1:]
    assert [p.id for p in archived] == ids[:1]


async def test_unknown_filter_names_are_refused_by_name(session: AsyncSession) -> None:
    products = ProductRepository(session)
    with pytest.raises(TypeError, match=r"Product has no column 'nmae' to filter on"):
        await products.list(nmae="chair")
    with pytest.raises(TypeError, match=r"relationship 'variants'"):
        await products.count(variants=None)


async def test_count_and_exists(db: Database, session: AsyncSession) -> None:
    prefix = marker()
    await seed_products(session, 4, prefix=prefix)
    products = ProductRepository(session)
    with count_queries(db) as queries:
        assert await products.count(Product.name.startswith(prefix)) == 4
        assert await products.exists(name=f"{prefix}-0003") is True
        assert await products.exists(name=f"{prefix}-9999") is False
    assert queries.count == 3
    count_sql, *exists_sql = queries.statements
    assert "count(*)" in count_sql
    for sql in exists_sql:
        assert "EXISTS" in sql
        assert "count(" not in sql


async def test_search_text_is_matched_literally(session: AsyncSession) -> None:
    prefix = marker()
    names = ["50% off", "50 percent", "a_b", "axb", "back\\slash", "backslash", "Case"]
    session.add_all(
        [Customer(email=f"{prefix}-{i}@example.com", name=n) for i, n in enumerate(names)]
    )
    await session.flush()
    customers = CustomerRepository(session)
    mine = Customer.email.startswith(prefix)

    async def search(text: str) -> list[str]:
        return sorted(c.name for c in await customers.list(mine, customers.matching(text)))

    assert await search("50%") == ["50% off"]
    assert await search("a_b") == ["a_b"]
    assert await search("\\") == ["back\\slash"]
    assert await search("case") == ["Case"]
    assert await search("%") == ["50% off"]
    assert escape_like("5%_\\") == "5\\%\\_\\\\"
    literal = contains(Customer.name, "x%")
    assert literal.right.value == "%x\\%%"  # type: ignore[attr-defined]


async def test_matching_needs_search_columns(session: AsyncSession) -> None:
    class Plain(Repository[Tag]):
        model = Tag

    with pytest.raises(ConfigurationError, match="declares no search_columns"):
        Plain(session).matching("x")


async def test_row_locks_on_request(db: Database, session: AsyncSession) -> None:
    (order_id,) = await seed_orders(session, 1)
    orders = OrderRepository(session)
    with count_queries(db) as queries:
        await orders.get(order_id, load=("customer",), for_update=True)
        await orders.list(customer_id=-1, skip_locked=True)
    assert queries.count == 2
    assert "FOR UPDATE OF orders" in queries.statements[0]
    assert "LEFT OUTER JOIN customers" in queries.statements[0]
    assert queries.statements[1].rstrip().endswith("FOR UPDATE OF orders SKIP LOCKED")


# -- keyset pages -----------------------------------------------------------------


async def test_walking_keyset_pages_yields_every_row_once_in_order(
    session: AsyncSession,
) -> None:
    prefix = marker()
    session.add(Product(name=f"{prefix}-p"))
    await session.flush()
    product_id = (
        await session.scalars(select(Product.id).where(Product.name == f"{prefix}-p"))
    ).one()
    session.add_all(
        [
            Variant(
                product_id=product_id, sku=f"{prefix}-{i:02d}", name=f"n{i % 3}", price_cents=i % 4
            )
            for i in range(23)
        ]
    )
    await session.flush()
    variants = VariantRepository(session)
    mine = Variant.product_id == product_id
    ordering = ("-price_cents", "name")  # mixed directions, many ties: the id breaks them
    expected = [v.id for v in await variants.list(mine, order_by=ordering)]
    seen: list[int] = []
    cursor = None
    while True:
        page = await variants.page(mine, after=cursor, limit=5, order_by=ordering)
        seen += [v.id for v in page.items]
        assert page.has_more == (page.next_cursor is not None)
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert seen == expected
    assert len(set(seen)) == 23


@pytest.mark.parametrize("rows", [5, 500])
async def test_page_statement_count_does_not_grow_with_rows(
    db: Database, session: AsyncSession, rows: int
) -> None:
    prefix = marker()
    await seed_products(session, rows, prefix=prefix)
    products = ProductRepository(session)
    mine = Product.name.startswith(prefix)
    with count_queries(db) as queries:
        page = await products.page(mine, limit=500)
    assert queries.count == 3, queries.report()  # products, variants, tags
    assert len(page.items) == rows
    assert page.has_more is False
    assert page.next_cursor is None
    assert all(len(p.variants) == 2 and len(p.tags) == 2 for p in page.items)


async def test_a_full_page_of_500_keeps_one_statement_per_collection(
    db: Database, session: AsyncSession
) -> None:
    prefix = marker()
    await seed_products(session, 501, variants=1, tags=1, prefix=prefix)
    products = ProductRepository(session)
    with count_queries(db) as queries:
        page = await products.page(Product.name.startswith(prefix), limit=500)
    assert queries.count == 3, queries.report()
    assert len(page.items) == 500
    assert page.has_more is True
    last = await products.page(Product.name.startswith(prefix), after=page.next_cursor, limit=500)
    assert [p.name for p in last.items] == [f"{prefix}-0500"]
    assert last.has_more is False


async def test_page_totals_on_request(db: Database, session: AsyncSession) -> None:
    prefix = marker()
    await seed_products(session, 7, prefix=prefix)
    products = ProductRepository(session)
    mine = Product.name.startswith(prefix)
    with count_queries(db) as queries:
        page = await products.page(mine, limit=3)
    assert page.total is None
    assert queries.count == 3
    with count_queries(db) as queries:
        page = await products.page(mine, limit=3, total="exact")
    assert page.total == 7
    assert queries.count == 4
    second = await products.page(mine, after=page.next_cursor, limit=3, total="exact")
    assert second.total == 7  # the total ignores the cursor

    await session.execute(text("ANALYZE products"))
    with count_queries(db) as queries:
        page = await products.page(mine, limit=3, total="estimate", load=())
    assert queries.count == 2
    exact = await products.count()
    assert page.total is not None
    assert abs(page.total - exact) <= max(5, exact // 10)
    assert "reltuples" in queries.statements[1]


async def test_a_cursor_for_another_ordering_or_garbled_raises_invalid_cursor(
    db: Database, session: AsyncSession
) -> None:
    prefix = marker()
    await seed_products(session, 4, prefix=prefix)
    products = ProductRepository(session)
    mine = Product.name.startswith(prefix)
    page = await products.page(mine, limit=2)
    assert page.next_cursor is not None
    with count_queries(db) as queries:
        with pytest.raises(InvalidCursor):
            await products.page(mine, after=page.next_cursor, limit=2, order_by=("-name",))
        with pytest.raises(InvalidCursor):
            await products.page(mine, after=page.next_cursor[:-2], limit=2)
        with pytest.raises(InvalidCursor):
            await products.page(mine, after="'; DROP TABLE products; --", limit=2)
        with pytest.raises(InvalidCursor):
            await VariantRepository(session).page(after=page.next_cursor)
    assert queries.count == 0  # refused before any SQL
    rest = await products.page(mine, after=page.next_cursor, limit=2)  # the transaction is fine
    assert len(rest.items) == 2


async def test_keyset_pages_refuse_nullable_and_expression_keys(session: AsyncSession) -> None:
    products = ProductRepository(session)
    with pytest.raises(TypeError, match=r"NOT NULL sort columns; Product.archived_at is nullable"):
        await products.page(order_by=("archived_at",))
    with pytest.raises(TypeError, match="mapped columns only"):
        await products.page(order_by=(func.lower(Product.name),))


@pytest.mark.parametrize("limit", [0, -1, 501, "10"])
async def test_page_sizes_are_bounded(session: AsyncSession, limit: Any) -> None:
    with pytest.raises(ValueError, match="limit must be"):
        await ProductRepository(session).page(limit=limit)


async def test_offset_pages(db: Database, session: AsyncSession) -> None:
    prefix = marker()
    await seed_products(session, 7, prefix=prefix)
    products = ProductRepository(session)
    mine = Product.name.startswith(prefix)
    with count_queries(db) as queries:
        first = await products.offset_page(mine, page=1, limit=3)
    assert queries.count == 4  # products, variants, tags, count
    assert first.total == 7
    assert first.has_more is True
    third = await products.offset_page(mine, page=3, limit=3, total=None)
    assert [p.name for p in third.items] == [f"{prefix}-0006"]
    assert third.has_more is False
    assert third.total is None
    beyond = await products.offset_page(mine, page=9, limit=3)
    assert beyond.items == ()
    assert beyond.has_more is False
    with pytest.raises(ValueError, match="page must be"):
        await products.offset_page(page=0)


# -- writes -----------------------------------------------------------------------


async def test_add_returns_server_defaults_in_one_statement(
    db: Database, session: AsyncSession
) -> None:
    (product_id,) = await seed_products(session, 1, variants=0)
    variants = VariantRepository(session)
    with count_queries(db) as queries:
        variant = await variants.add(
            Variant(product_id=product_id, sku=f"{marker()}", name="v", price_cents=5)
        )
    assert queries.count == 1
    assert "RETURNING" in queries.statements[0]
    with count_queries(db) as after:
        assert variant.id > 0
        assert variant.stock_qty == 0
        assert variant.created_at is not None
    assert after.count == 0


async def test_add_of_a_duplicate_raises_conflict_naming_the_constraint(
    session: AsyncSession,
) -> None:
    (product_id,) = await seed_products(session, 1, variants=0)
    variants = VariantRepository(session)
    sku = f"SECRET-{marker()}"
    await variants.add(Variant(product_id=product_id, sku=sku, name="a", price_cents=1))
    with pytest.raises(Conflict) as caught:
        await variants.add(Variant(product_id=product_id, sku=sku, name="b", price_cents=1))
    assert caught.value.constraint == "uq_variants_sku"
    assert caught.value.sqlstate == "23505"
    assert sku not in str(caught.value)
    assert caught.value.__cause__ is not None
    await session.rollback()


async def test_add_refuses_another_model(session: AsyncSession) -> None:
    with pytest.raises(TypeError, match="VariantRepository stores Variant objects, not Product"):
        await VariantRepository(session).add(Product(name="x"))  # type: ignore[arg-type]


@pytest.mark.parametrize("rows", [5, 100, 500])
async def test_add_many_is_one_insert_with_returning(
    db: Database, session: AsyncSession, rows: int
) -> None:
    (product_id,) = await seed_products(session, 1, variants=0)
    prefix = marker()
    variants = VariantRepository(session)
    new = [
        Variant(product_id=product_id, sku=f"{prefix}-{i}", name="v", price_cents=i)
        for i in range(rows)
    ]
    with count_queries(db) as queries:
        added = await variants.add_many(new)
    assert queries.count == 1, queries.report()
    assert queries.statements[0].startswith("INSERT INTO variants")
    assert added == new
    assert len({v.id for v in added}) == rows
    assert all(v.created_at is not None and v.stock_qty == 0 for v in added)
    assert [v.price_cents for v in await variants.get_many([v.id for v in added])] == list(
        range(rows)
    )


async def test_update_is_one_update_returning_and_refreshes_the_object(
    db: Database, session: AsyncSession
) -> None:
    (product_id,) = await seed_products(session, 1, variants=1)
    variants = VariantRepository(session)
    (variant,) = await variants.list(product_id=product_id, load=())
    with count_queries(db) as queries:
        updated = await variants.update(variant.id, stock_qty=Variant.stock_qty + 7, name="renamed")
    assert queries.count == 1
    assert queries.statements[0].startswith("UPDATE variants SET")
    assert "RETURNING" in queries.statements[0]
    assert updated is variant
    with count_queries(db) as after:
        assert (variant.stock_qty, variant.name) == (7, "renamed")
    assert after.count == 0


async def test_update_errors(db: Database, session: AsyncSession) -> None:
    (product_id,) = await seed_products(session, 1, variants=1)
    variants = VariantRepository(session)
    (variant,) = await variants.list(product_id=product_id)
    with (
        count_queries(db) as queries,
        pytest.raises(NotFound, match=r"^Variant 987654321 not found$"),
    ):
        await variants.update(987654321, name="x")
    assert queries.count == 1
    with pytest.raises(TypeError, match="Variant has no column"):
        await variants.update(variant.id, colour="red")
    with pytest.raises(TypeError, match="at least one column"):
        await variants.update(variant.id)
    with pytest.raises(CheckViolation) as caught:
        await variants.update(variant.id, price_cents=-1)
    assert caught.value.constraint is not None
    assert "price_cents_non_negative" in caught.value.constraint
    await session.rollback()


async def test_delete_is_one_statement(db: Database, session: AsyncSession) -> None:
    ids = await seed_products(session, 2)
    products = ProductRepository(session)
    loaded = await products.get(ids[0])
    with count_queries(db) as queries:
        await products.delete(ids[0])
    assert queries.count == 1
    assert queries.statements[0].startswith("DELETE FROM products")
    assert loaded not in session
    assert await products.get_or_none(ids[0]) is None
    assert await VariantRepository(session).count(product_id=ids[0]) == 0  # cascaded
    with pytest.raises(NotFound, match=rf"^Product {ids[0]} not found$"):
        await products.delete(ids[0])


async def test_a_missing_reference_raises_foreign_key_violation(session: AsyncSession) -> None:
    variants = VariantRepository(session)
    with pytest.raises(ForeignKeyViolation) as caught:
        await variants.add(Variant(product_id=987654321, sku=marker(), name="v", price_cents=1))
    assert caught.value.constraint == "fk_variants_product_id_products"
    assert caught.value.sqlstate == "23503"
    await session.rollback()


async def test_deleting_a_restricted_parent_raises_a_foreign_key_violation(
    session: AsyncSession,
) -> None:
    (order_id,) = await seed_orders(session, 1)
    order = await OrderRepository(session).get(order_id, load=())
    with pytest.raises(ForeignKeyViolation) as caught:  # ON DELETE RESTRICT: SQLSTATE 23001
        await CustomerRepository(session).delete(order.customer_id)
    assert caught.value.constraint == "fk_orders_customer_id_customers"
    assert caught.value.sqlstate == "23001"
    await session.rollback()


async def test_update_where_and_delete_where(db: Database, session: AsyncSession) -> None:
    prefix = marker()
    await seed_products(session, 3, variants=3, prefix=prefix)
    variants = VariantRepository(session)
    mine = Variant.sku.startswith(prefix)
    with count_queries(db) as queries:
        changed = await variants.update_where(mine, name="v0", values={"stock_qty": 9})
        deleted = await variants.delete_where(mine, name="v1")
    assert queries.count == 2
    assert (changed, deleted) == (3, 3)
    assert await variants.count(mine, stock_qty=9) == 3
    assert await variants.count(mine) == 6
    with pytest.raises(TypeError, match="needs a filter"):
        await variants.update_where(values={"stock_qty": 0})
    with pytest.raises(TypeError, match="needs a filter"):
        await variants.delete_where()
    assert await variants.update_where(true(), Variant.id < 0, values={"stock_qty": 0}) == 0


async def test_upsert_inserts_then_updates_in_one_statement_each(
    db: Database, session: AsyncSession
) -> None:
    customers = CustomerRepository(session)
    email = f"{marker()}@example.com"
    with count_queries(db) as queries:
        first = await customers.upsert({"email": email, "name": "Ada"})
        second = await customers.upsert({"email": email, "name": "Ada L."})
    assert queries.count == 2
    for sql in queries.statements:
        assert "ON CONFLICT (email) DO UPDATE" in sql
        assert "RETURNING" in sql
    assert second is first
    assert first.name == "Ada L."
    kept = await customers.upsert({"email": email, "name": "ignored"}, update=())
    assert kept is first
    assert kept.name == "Ada L."
    assert await customers.count(email=email) == 1


async def test_upsert_many_is_one_statement_in_input_order(
    db: Database, session: AsyncSession
) -> None:
    (product_id,) = await seed_products(session, 1, variants=0)
    prefix = marker()
    variants = VariantRepository(session)
    await variants.add(
        Variant(product_id=product_id, sku=f"{prefix}-050", name="old", price_cents=1)
    )
    rows = [
        {"product_id": product_id, "sku": f"{prefix}-{i:03d}", "name": "new", "price_cents": i}
        for i in reversed(range(100))
    ]
    with count_queries(db) as queries:
        upserted = await variants.upsert_many(rows)
    assert queries.count == 1, queries.report()
    assert [v.sku for v in upserted] == [r["sku"] for r in rows]
    assert {v.name for v in upserted} == {"new"}
    assert await variants.count(Variant.sku.startswith(prefix)) == 100
    with count_queries(db) as queries:
        assert await variants.upsert_many([]) == []
    assert queries.count == 0


async def test_upsert_input_errors(session: AsyncSession) -> None:
    customers = CustomerRepository(session)
    row = {"email": "a@example.com", "name": "A"}
    with pytest.raises(ValueError, match="rows 0 and 1 have the same email"):
        await customers.upsert_many([row, dict(row)])
    with pytest.raises(ValueError, match="row 1 sets different columns"):
        await customers.upsert_many([row, {"email": "b@example.com"}])
    with pytest.raises(ValueError, match="conflict key"):
        await customers.upsert({"name": "A"})
    with pytest.raises(TypeError, match="Customer has no column"):
        await customers.upsert({"email": "a@example.com", "nickname": "A"})
    with pytest.raises(ConfigurationError, match=r"no unique constraint on \(name\)"):
        await customers.upsert(row, on=("name",))
    with pytest.raises(ConfigurationError, match="declares no upsert_on"):
        await OrderRepository(session).upsert({"order_ref": "x"})


async def test_copy_loads_rows_inside_the_transaction(db: Database, session: AsyncSession) -> None:
    (product_id,) = await seed_products(session, 1, variants=0)
    prefix = marker()
    variants = VariantRepository(session)
    records = [(product_id, f"{prefix}-{i}", "copied", i) for i in range(1000)]
    with count_queries(db) as queries:
        copied = await variants.copy(records, columns=["product_id", "sku", "name", "price_cents"])
    assert copied == 1000
    assert queries.count == 0  # COPY goes through asyncpg, beside SQLAlchemy
    assert await variants.count(Variant.sku.startswith(prefix), stock_qty=0) == 1000
    await session.rollback()  # rolls back the test's savepoint, and the copy with it
    assert await variants.count(Variant.sku.startswith(prefix)) == 0


async def test_copy_translates_errors_and_checks_columns(session: AsyncSession) -> None:
    (product_id,) = await seed_products(session, 1, variants=0)
    variants = VariantRepository(session)
    columns = ["product_id", "sku", "name", "price_cents"]
    with pytest.raises(TypeError, match="Variant has no column"):
        await variants.copy([], columns=["sku", "colour"])
    with pytest.raises(Conflict) as caught:
        await variants.copy(
            [(product_id, "dup", "a", 1), (product_id, "dup", "b", 1)], columns=columns
        )
    assert caught.value.constraint == "uq_variants_sku"
    await session.rollback()


async def test_composite_primary_keys(db: Database, session: AsyncSession) -> None:
    class OrderItems(Repository[OrderItem]):
        model = OrderItem
        load = ("variant",)

    (order_id,) = await seed_orders(session, 1, items=3)
    items = OrderItems(session)
    rows = await items.list(order_id=order_id)
    keys = [(row.order_id, row.variant_id) for row in rows]
    with count_queries(db) as queries:
        one = await items.get(keys[1])
        many = await items.get_many([keys[2], keys[0]])
        page = await items.page(order_id=order_id, limit=2)
        rest = await items.page(order_id=order_id, after=page.next_cursor, limit=2)
    assert queries.count == 4
    assert (one.order_id, one.variant_id) == keys[1]
    assert [(r.order_id, r.variant_id) for r in many] == [keys[2], keys[0]]
    assert [(r.order_id, r.variant_id) for r in page.items + rest.items] == keys
    with pytest.raises(TypeError, match="composite primary key: pass a tuple of 2"):
        await items.get(order_id)
