"""Stock changes invalidate the catalog cache after commit, and only after commit."""

from __future__ import annotations

from collections.abc import Collection

import pytest
from sqlalchemy import text, update

from harbor_commerce.cache import CatalogCache, MemoryCache
from harbor_commerce.inventory import InsufficientStock, Inventory
from harbor_commerce.models import StockReservation
from harbor_commerce.seed import new_order_ref, seed_customer, seed_product
from harbordb import Database
from harbordb.errors import AfterCommitError
from harbordb.uow import UnitOfWork

SEED_PREFIX = "cache"  # these tests commit: conftest.py deletes rows seeded under it


class RecordingCache(MemoryCache[str]):
    """A `MemoryCache` that also records every invalidation."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[frozenset[int], frozenset[int]]] = []

    async def invalidate(
        self, *, variant_ids: Collection[int], product_ids: Collection[int]
    ) -> None:
        self.calls.append((frozenset(variant_ids), frozenset(product_ids)))
        await super().invalidate(variant_ids=variant_ids, product_ids=product_ids)


async def seed(db: Database, stocks: list[int]) -> tuple[int, list[int]]:
    product = await seed_product(db, SEED_PREFIX, stocks)
    return product.id, [variant.id for variant in product.variants]


def warm(cache: MemoryCache[str], product_id: int, variant_ids: list[int]) -> None:
    cache.set("product", product_id, "product page")
    for vid in variant_ids:
        cache.set("variant", vid, "stock badge")


def ref() -> str:
    return new_order_ref(SEED_PREFIX)


async def test_memory_cache_is_a_catalog_cache() -> None:
    cache: MemoryCache[str] = MemoryCache()
    assert isinstance(cache, CatalogCache)
    cache.set("variant", 1, "a")
    cache.set("variant", 2, "b")
    cache.set("product", 1, "c")
    await cache.invalidate(variant_ids=[1, 99], product_ids=[])
    assert (cache.get("variant", 1), cache.get("variant", 2), cache.get("product", 1)) == (
        None,
        "b",
        "c",
    )
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0


async def test_reserve_invalidates_the_variant_and_its_product(database: Database) -> None:
    product_id, (vid, other) = await seed(database, [5, 5])
    cache = RecordingCache()
    warm(cache, product_id, [vid, other])
    inventory = Inventory(database, cache=cache)
    await inventory.reserve(vid, 1, ref())
    assert cache.calls == [(frozenset({vid}), frozenset({product_id}))]
    assert ("variant", vid) not in cache
    assert ("product", product_id) not in cache
    assert cache.get("variant", other) == "stock badge"


async def test_refusals_and_repeats_invalidate_nothing(database: Database) -> None:
    product_id, (vid,) = await seed(database, [1])
    cache = RecordingCache()
    inventory = Inventory(database, cache=cache)
    order_ref = ref()
    await inventory.reserve(vid, 1, order_ref)
    warm(cache, product_id, [vid])
    cache.calls.clear()
    await inventory.reserve(vid, 1, order_ref)  # the same request again: nothing changes
    with pytest.raises(InsufficientStock):
        await inventory.reserve(vid, 1, ref())
    assert cache.calls == []
    assert len(cache) == 2


async def test_invalidation_waits_for_the_callers_commit(database: Database) -> None:
    product_id, (vid,) = await seed(database, [5])
    cache = RecordingCache()
    warm(cache, product_id, [vid])
    inventory = Inventory(database, cache=cache)
    async with database.unit_of_work() as uow:
        await inventory.reserve(vid, 2, ref(), uow=uow)
        assert cache.calls == []  # not yet committed: readers may still cache the old stock
        await uow.commit()
    assert cache.calls == [(frozenset({vid}), frozenset({product_id}))]
    assert len(cache) == 0


async def test_a_rolled_back_unit_of_work_invalidates_nothing(database: Database) -> None:
    product_id, (vid,) = await seed(database, [5])
    cache = RecordingCache()
    warm(cache, product_id, [vid])
    inventory = Inventory(database, cache=cache)

    async def reserve_then_fail() -> None:
        async with database.unit_of_work() as uow:
            await inventory.reserve(vid, 2, ref(), uow=uow)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await reserve_then_fail()
    async with database.unit_of_work() as uow:
        await inventory.reserve(vid, 2, ref(), uow=uow)
        # leaving without commit rolls back
    assert cache.calls == []
    assert len(cache) == 2


async def test_a_rolled_back_savepoint_drops_its_invalidation(database: Database) -> None:
    product_id, (kept, undone) = await seed(database, [5, 5])
    cache = RecordingCache()
    inventory = Inventory(database, cache=cache)

    async def reserve_in_savepoint_then_fail(uow: UnitOfWork) -> None:
        async with uow.savepoint():
            await inventory.reserve(undone, 1, ref(), uow=uow)
            raise RuntimeError("undo this one")

    async with database.unit_of_work() as uow:
        await inventory.reserve(kept, 1, ref(), uow=uow)
        with pytest.raises(RuntimeError, match="undo this one"):
            await reserve_in_savepoint_then_fail(uow)
        await uow.commit()
    assert cache.calls == [(frozenset({kept}), frozenset({product_id}))]


async def test_the_cache_hears_only_after_the_change_is_visible(database: Database) -> None:
    """Invalidation must not beat the commit, or a reader could re-cache the old stock."""
    _, (vid,) = await seed(database, [5])
    seen: list[int] = []

    class ReadingCache:
        async def invalidate(
            self, *, variant_ids: Collection[int], product_ids: Collection[int]
        ) -> None:
            async with database.unit_of_work(read_only=True) as uow:
                seen.append((await uow.variants.get(vid, load=())).stock_qty)

    inventory = Inventory(database, cache=ReadingCache())
    held = await inventory.reserve(vid, 2, ref())
    await inventory.release(held.id)
    assert seen == [3, 5]


async def test_release_and_sweep_invalidate_checkout_does_not(database: Database) -> None:
    product_id, (first, second) = await seed(database, [5, 5])
    customer = await seed_customer(database, SEED_PREFIX)
    cache = RecordingCache()
    inventory = Inventory(database, cache=cache)
    await inventory.release_expired(batch_size=10_000)  # earlier tests' leftovers
    bought, lapsed, dropped = ref(), ref(), ref()
    await inventory.reserve(first, 1, bought)
    released = await inventory.reserve(second, 1, dropped)
    await inventory.reserve(first, 1, lapsed)
    await inventory.reserve(second, 1, lapsed)
    cache.calls.clear()

    await inventory.checkout(bought, customer.id)
    assert cache.calls == []  # the stock left at reserve time

    await inventory.release(released.id)
    assert cache.calls == [(frozenset({second}), frozenset({product_id}))]
    await inventory.release(released.id)  # a no-op release changes nothing
    assert len(cache.calls) == 1

    async with database.unit_of_work() as uow:
        await uow.session.execute(
            update(StockReservation)
            .where(StockReservation.order_ref == lapsed)
            .values(expires_at=text("now() - interval '1 minute'"))
        )
        await uow.commit()
    assert await inventory.release_expired() == 2
    assert cache.calls[1:] == [(frozenset({first, second}), frozenset({product_id}))]


async def test_a_failing_cache_reports_after_the_data_committed(database: Database) -> None:
    _, (vid,) = await seed(database, [5])

    class BrokenCache:
        async def invalidate(
            self, *, variant_ids: Collection[int], product_ids: Collection[int]
        ) -> None:
            raise ConnectionError("cache is down")

    order_ref = ref()
    with pytest.raises(AfterCommitError):
        await Inventory(database, cache=BrokenCache()).reserve(vid, 2, order_ref)
    async with database.unit_of_work(read_only=True) as uow:
        assert (await uow.variants.get(vid, load=())).stock_qty == 3
        assert await uow.reservations.count(order_ref=order_ref) == 1
