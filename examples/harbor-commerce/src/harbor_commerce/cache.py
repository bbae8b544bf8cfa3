"""The catalog cache interface that stock changes invalidate, and an in-memory cache.

A service may cache catalog reads (a product page, a variant's stock). When
a unit of work commits a stock change, `harbor_commerce.inventory` tells the cache
which variants and products changed, from an after-commit callback: a
rolled-back transaction tells it nothing, and nothing is dropped before the
change is visible to other transactions.

Anything with an async ``invalidate(variant_ids=..., product_ids=...)`` is a
`CatalogCache`; a Redis-backed one would delete keys there.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Generic, Literal, Protocol, TypeVar, runtime_checkable

Kind = Literal["variant", "product"]
CacheKey = tuple[Kind, int]
V = TypeVar("V")


@runtime_checkable
class CatalogCache(Protocol):
    """What inventory operations notify after a commit that changed stock."""

    async def invalidate(
        self, *, variant_ids: Collection[int], product_ids: Collection[int]
    ) -> None:
        """Forget whatever is cached for these variants and products."""
        ...


class MemoryCache(Generic[V]):
    """A process-local `CatalogCache`: values keyed by ``("variant", id)`` or ``("product", id)``.

    No expiry and no size bound: entries leave only through `invalidate` or
    `clear`. Fine for one process and for tests; a fleet of service processes
    needs a shared cache.
    """

    def __init__(self) -> None:
        self._entries: dict[CacheKey, V] = {}

    def get(self, kind: Kind, id: int) -> V | None:
        return self._entries.get((kind, id))

    def set(self, kind: Kind, id: int, value: V) -> None:
        self._entries[(kind, id)] = value

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    async def invalidate(
        self, *, variant_ids: Collection[int], product_ids: Collection[int]
    ) -> None:
        for id in variant_ids:
            self._entries.pop(("variant", id), None)
        for id in product_ids:
            self._entries.pop(("product", id), None)
