"""Readable after the block: what a unit of work's objects hold once it has ended.

Every ending (commit, an exception, read-only, leaving without commit, and a
unit of work joined to an outer connection) keeps the loaded attributes of a
unit of work that wrote nothing, while what was not loaded raises at once;
the end then costs no expire pass. A unit of work that wrote and did not
commit expires everything it loaded, so nothing uncommitted looks committed.
Directly and through PgBouncer (the `db` fixture).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select, text, update
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm.exc import DetachedInstanceError

from harbor_commerce.models import Base, Product, Tag, Variant
from harbor_commerce.repositories import ProductRepository, TagRepository
from harbor_commerce.seed import seed_product
from harbor_commerce.uow import CommerceWork
from harbordb import Database
from harbordb.testing.plugin import rolled_back_connection

SEED_PREFIX = "endings"  # these tests commit: conftest.py deletes rows seeded under it

UNLOADED = (DetachedInstanceError, InvalidRequestError)  # lazy="raise" or detached: at once


class Boom(Exception):
    pass


@pytest.fixture
async def product_id(database: Database[CommerceWork]) -> int:
    """A committed product with two variants (deleted after the test)."""
    product = await seed_product(database, SEED_PREFIX, [3, 5])
    return product.id


@contextmanager
def expire_events() -> Iterator[list[object]]:
    """One entry per object of any Harbor model that the ORM expires meanwhile."""
    expired: list[object] = []

    def on_expire(target: Any, attrs: Any) -> None:
        expired.append(attrs)

    event.listen(Base, "expire", on_expire, propagate=True)
    try:
        yield expired
    finally:
        event.remove(Base, "expire", on_expire)


def assert_readable(product: Product, product_id: int) -> None:
    """What the read loaded is there; what it did not load raises at once."""
    assert product.id == product_id
    assert product.name.startswith(f"{SEED_PREFIX} ")
    assert sorted(v.stock_qty for v in product.variants) == [3, 5]
    assert all(v.sku.startswith(f"{SEED_PREFIX}-") for v in product.variants)
    with pytest.raises(UNLOADED):
        _ = product.tags  # not in the load plan
    with pytest.raises(UNLOADED):
        _ = product.variants[0].product  # the variants were loaded without it


def assert_expired(product: Product) -> None:
    """Nothing of the object can be read any more: it cannot pass for committed."""
    with pytest.raises(DetachedInstanceError):
        _ = product.name


async def read(uow: CommerceWork, product_id: int) -> Product:
    return await uow.products.get(product_id, load=("variants",))


# -- a unit of work that wrote nothing: readable after every ending ---------------


async def test_readable_after_commit(db: Database[CommerceWork], product_id: int) -> None:
    async with db.unit_of_work() as uow:
        product = await read(uow, product_id)
        await uow.commit()
    assert_readable(product, product_id)


async def test_readable_after_an_exception_rolls_back(
    db: Database[CommerceWork], product_id: int
) -> None:
    loaded: list[Product] = []

    async def fail_after_reading() -> None:
        async with db.unit_of_work() as uow:
            loaded.append(await read(uow, product_id))
            raise Boom

    with expire_events() as expired, pytest.raises(Boom):
        await fail_after_reading()
    assert_readable(loaded[0], product_id)
    assert expired == []


async def test_readable_after_a_read_only_unit_of_work(
    db: Database[CommerceWork], product_id: int
) -> None:
    with expire_events() as expired:
        async with db.unit_of_work(read_only=True) as uow:
            product = await read(uow, product_id)
    assert_readable(product, product_id)
    assert expired == []


async def test_readable_after_leaving_without_commit(
    db: Database[CommerceWork], product_id: int
) -> None:
    with expire_events() as expired:
        async with db.unit_of_work() as uow:
            product = await read(uow, product_id)
            locked = await uow.products.get(product_id, load=(), for_update=True)  # a read
    assert_readable(product, product_id)
    assert locked is product
    assert expired == []


async def test_readable_after_run_and_after_a_page(
    db: Database[CommerceWork], product_id: int
) -> None:
    product = await db.run(lambda uow: read(uow, product_id))
    assert_readable(product, product_id)
    async with db.unit_of_work(read_only=True) as uow:
        page = await uow.products.page(Product.id == product_id)
    (item,) = page.items
    assert {tag.name for tag in item.tags} == set()  # in ProductRepository's plan
    assert len(item.variants) == 2


async def test_a_write_counts_as_an_expire_pass_and_a_read_does_not(
    db: Database[CommerceWork], product_id: int
) -> None:
    """The contrast that shows the listener sees what it should: the same objects
    are expired by the end of a unit of work that wrote."""
    with expire_events() as expired:
        async with db.unit_of_work() as uow:
            product = await read(uow, product_id)
            await uow.repository(TagRepository).add(Tag(name=f"{SEED_PREFIX}-{uuid.uuid4()}"))
    assert len(expired) >= 3  # the product and its two variants
    assert_expired(product)


# -- joined to an outer connection (how tests run units of work) --------------------


@pytest.fixture
async def outer(db: Database[CommerceWork]) -> AsyncIterator[AsyncConnection]:
    async with rolled_back_connection(db) as connection:
        yield connection


async def _setting(connection: AsyncConnection, name: str) -> str:
    """A setting, read with a SELECT (textual SQL would count as a possible write)."""
    return str((await connection.execute(select(func.current_setting(name)))).scalar_one())


async def test_joined_readable_and_its_savepoint_rolled_back(
    db: Database[CommerceWork], outer: AsyncConnection, product_id: int
) -> None:
    before = await _setting(outer, "statement_timeout")
    with expire_events() as expired:
        async with db.unit_of_work(connection=outer, statement_timeout=4.5) as uow:
            product = await read(uow, product_id)
            assert await _setting(await uow.session.connection(), "statement_timeout") == "4500ms"
    assert_readable(product, product_id)
    assert expired == []
    # Released, the savepoint would have kept its SET LOCAL; rolled back, it is gone.
    assert await _setting(outer, "statement_timeout") == before
    assert outer.in_transaction()
    assert not outer.in_nested_transaction()


async def test_joined_write_is_rolled_back_and_expired(
    db: Database[CommerceWork], outer: AsyncConnection, product_id: int
) -> None:
    async with db.unit_of_work(connection=outer) as uow:
        product = await read(uow, product_id)
        await uow.products.update(product_id, name="renamed, never committed")
        assert product.name == "renamed, never committed"
    assert_expired(product)
    name = (await outer.execute(select(Product.name).where(Product.id == product_id))).scalar()
    assert name is not None
    assert name.startswith(f"{SEED_PREFIX} ")


# -- a unit of work that wrote and did not commit: nothing looks committed -----------

RENAMED = "renamed, never committed"


async def _flush(uow: CommerceWork, product: Product, product_id: int) -> None:
    product.name = RENAMED
    await uow.flush()


async def _orm_update(uow: CommerceWork, product: Product, product_id: int) -> None:
    await uow.products.update(product_id, name=RENAMED)  # UPDATE ... RETURNING, refreshed


async def _orm_update_where(uow: CommerceWork, product: Product, product_id: int) -> None:
    await uow.products.update_where(Product.id == product_id, values={"name": RENAMED})


async def _core_update(uow: CommerceWork, product: Product, product_id: int) -> None:
    table = Product.__table__
    await uow.session.execute(update(table).where(table.c.id == product_id).values(name=RENAMED))


async def _textual(uow: CommerceWork, product: Product, product_id: int) -> None:
    await uow.session.execute(
        text("UPDATE products SET name = :name WHERE id = :id"), {"name": RENAMED, "id": product_id}
    )


async def _cte_in_a_select(uow: CommerceWork, product: Product, product_id: int) -> None:
    table = Product.__table__
    renamed = (
        update(table)
        .where(table.c.id == product_id)
        .values(name=RENAMED)
        .returning(table.c.id)
        .cte("renamed")
    )
    await uow.session.execute(select(func.count()).select_from(renamed))


async def _on_the_connection(uow: CommerceWork, product: Product, product_id: int) -> None:
    table = Product.__table__
    connection = await uow.session.connection()
    await connection.execute(update(table).where(table.c.id == product_id).values(name=RENAMED))


async def _unflushed(uow: CommerceWork, product: Product, product_id: int) -> None:
    product.name = RENAMED  # never sent: still not committed


async def _copy(uow: CommerceWork, product: Product, product_id: int) -> None:
    variants = uow.variants
    await variants.copy(
        [(product_id, f"{SEED_PREFIX}-{uuid.uuid4().hex}", "copied", 1, 0)],
        columns=("product_id", "sku", "name", "price_cents", "stock_qty"),
    )


WRITES: dict[str, Callable[[CommerceWork, Product, int], Awaitable[None]]] = {
    "flush": _flush,
    "orm update returning": _orm_update,
    "orm update_where": _orm_update_where,
    "core update": _core_update,
    "textual sql": _textual,
    "data-modifying cte": _cte_in_a_select,
    "session.connection()": _on_the_connection,
    "unflushed change": _unflushed,
    "copy": _copy,
}


@pytest.mark.parametrize("ending", ["leave", "exception"])
@pytest.mark.parametrize("write", list(WRITES))
async def test_a_write_not_committed_is_not_readable_as_if_committed(
    db: Database[CommerceWork], product_id: int, write: str, ending: str
) -> None:
    with pytest.raises(Boom) if ending == "exception" else _nothing():
        async with db.unit_of_work() as uow:
            product = await read(uow, product_id)
            await WRITES[write](uow, product, product_id)
            if write != "unflushed change":  # a read would flush it
                # Read after the write: the session now shows what the statement changed.
                again = await uow.products.list(Product.id == product_id, load=("variants",))
                assert again == [product]
            if ending == "exception":
                raise Boom
    assert_expired(product)
    for variant in product.__dict__.get("variants", []):
        with pytest.raises(DetachedInstanceError):
            _ = variant.sku
    async with db.unit_of_work(read_only=True) as uow:
        committed = await read(uow, product_id)
        name, variants = committed.name, len(committed.variants)
    assert name != RENAMED
    assert variants == 2


@contextmanager
def _nothing() -> Iterator[None]:
    yield


async def test_reads_through_a_variant_repository_stay_readable(
    db: Database[CommerceWork], product_id: int
) -> None:
    """Core reads of a read model and ORM reads of another repository: nothing written."""
    async with db.unit_of_work() as uow:
        cards = await uow.repository(ProductRepository).catalog_cards(limit=500)
        variants = await uow.variants.list(Variant.product_id == product_id)
    assert isinstance(cards.items, tuple)
    assert sorted(v.stock_qty for v in variants) == [3, 5]


async def test_textual_sql_counts_as_a_write_except_in_a_read_only_block(
    db: Database[CommerceWork], product_id: int
) -> None:
    """`text()` may write, so it counts, unless the transaction is READ ONLY."""
    async with db.unit_of_work(read_only=True) as uow:
        product = await read(uow, product_id)
        await uow.session.execute(text("SELECT 1"))
    assert_readable(product, product_id)
    async with db.unit_of_work() as uow:
        product = await read(uow, product_id)
        await uow.session.execute(text("SELECT 1"))
    assert_expired(product)


async def test_a_change_never_flushed_in_a_read_only_block_is_expired(
    db: Database[CommerceWork], product_id: int
) -> None:
    async with db.unit_of_work(read_only=True) as uow:
        product = await read(uow, product_id)
        product.name = RENAMED
    assert_expired(product)
