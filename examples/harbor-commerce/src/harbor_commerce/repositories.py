"""The Harbor Commerce repositories: the reads and writes services use.

Each takes the unit of work's `AsyncSession`; none commits. Load plans
(`load`) are the default shape of what comes back: a catalog product carries
its variants and tags, an order its items with their variants and products.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func

from harbor_commerce.models import (
    Customer,
    Order,
    OrderStatus,
    Product,
    ReservationStatus,
    StockReservation,
    Tag,
    Variant,
)
from harbor_commerce.readmodels import CUSTOMER_HISTORY, PRODUCT_CARDS, CustomerHistory, ProductCard
from harbordb.errors import NotFound
from harbordb.pagination import Page, Total
from harbordb.projection import Filter, Projection
from harbordb.repository import Ordering, Repository, any_of, escape_like, keyset_query


class CustomerRepository(Repository[Customer]):
    model = Customer
    upsert_on = ("email",)
    search_columns = ("email", "name")

    async def by_email(self, email: str) -> Customer | None:
        """The customer with this exact email, or None. One statement."""
        found = await self.list(email=email, limit=1)
        return found[0] if found else None

    async def history(self, id: int, /) -> CustomerHistory:
        """The customer with every order, its lines, their variants and products, as a
        read-only `CustomerHistory` (no ORM objects). `NotFound` if no such customer.

        One statement (`CUSTOMER_HISTORY`) whatever the number of orders.
        """
        found = await CUSTOMER_HISTORY.get(self.session, id)
        if found is None:
            raise NotFound(f"Customer {id!r} not found")
        return found


# `catalog_cards`' projections by (tag?, search?), each built once.
_CARDS: dict[tuple[bool, bool], Projection[ProductCard]] = {}
# `catalog_page`'s filters and keyset queries in the default order, by (tag?, search?, after?).
_PAGES: dict[tuple[bool, bool, bool], tuple[list[ColumnElement[bool]], Select[Any]]] = {}


class ProductRepository(Repository[Product]):
    """Products with their variants and tags; archived ones stay for old orders."""

    model = Product
    load = ("variants", "tags")
    order_by = ("name",)
    search_columns = ("name",)

    @staticmethod
    def live() -> ColumnElement[bool]:
        """Filter: products on sale (not archived)."""
        return Product.archived_at.is_(None)

    async def catalog_page(
        self,
        *,
        after: str | None = None,
        limit: int = 50,
        tag: str | None = None,
        search: str | None = None,
        order_by: Ordering | None = None,
        total: Total = None,
    ) -> Page[Product]:
        """A keyset page of live products with variants and tags, by name.

        One statement (products with their variants and tags nested) whatever the
        page size, plus one for a `total`; a page query's first run in the
        process sends three (products, variants, tags). `tag` keeps products
        with that tag; `search` matches the name (wildcards in it are literal).
        """
        keys = self.sort_keys(order_by)
        shape = (tag is not None, search is not None, after is not None)
        built = _PAGES.get(shape) if order_by is None else None
        if built is None:
            filters = self._catalog_filters(*shape[:2])
            built = (filters, keyset_query(self.select_loaded(), filters, keys, resume=shape[2]))
            if order_by is None:
                _PAGES[shape] = built
        filters, query = built
        params = self._catalog_params(tag, search)
        return await self.keyset_page(
            query, keys, after=after, limit=limit, total=total, conditions=filters, params=params
        )

    async def catalog_cards(
        self,
        *,
        after: str | None = None,
        limit: int = 50,
        tag: str | None = None,
        search: str | None = None,
        total: Total = None,
    ) -> Page[ProductCard]:
        """`catalog_page` as read-only `ProductCard`s (`PRODUCT_CARDS`, no ORM objects).

        The same filters, order and cursors (a cursor of one works in the
        other) in one statement, plus one for a `total`.
        """
        shape = (tag is not None, search is not None)
        cards = _CARDS.get(shape)
        if cards is None:
            cards = _CARDS[shape] = PRODUCT_CARDS.where(*self._card_filters(*shape))
        order = [("-" if key.descending else "") + key.name for key in self.sort_keys()]
        params = self._catalog_params(tag, search)
        page = await cards.page(
            self.session, after=after, limit=limit, order_by=order, params=params
        )
        if total is None:
            return page
        filters = self._catalog_filters(tag is not None, search is not None)
        count = await self.page_total(total, filters, params)
        return Page(page.items, page.next_cursor, page.has_more, count)

    @staticmethod
    def _card_filters(tag: bool, search: bool) -> list[Filter]:
        """`_catalog_filters` on the projection's aliased `Product`."""
        filters: list[Filter] = [lambda p: p.archived_at.is_(None)]
        if tag:
            filters.append(lambda p: p.tags.any(Tag.name == bindparam("tag")))
        if search:
            filters.append(lambda p: p.name.ilike(bindparam("search"), escape="\\"))
        return filters

    @classmethod
    def _catalog_filters(cls, tag: bool, search: bool) -> list[ColumnElement[bool]]:
        """Live products; with ``:tag``; whose name matches the pattern ``:search``."""
        filters = [cls.live()]
        if tag:
            filters.append(Product.tags.any(Tag.name == bindparam("tag")))
        if search:
            filters.append(Product.name.ilike(bindparam("search"), escape="\\"))
        return filters

    @staticmethod
    def _catalog_params(tag: str | None, search: str | None) -> dict[str, str]:
        params = {}
        if tag is not None:
            params["tag"] = tag
        if search is not None:
            params["search"] = f"%{escape_like(search)}%"  # as `contains`: wildcards literal
        return params

    async def archive(self, id: int, /) -> Product:
        """Take a product off sale (idempotent: the first archive time stays). One UPDATE."""
        return await self.update(id, archived_at=func.coalesce(Product.archived_at, func.now()))


class TagRepository(Repository[Tag]):
    model = Tag
    order_by = ("name",)
    upsert_on = ("name",)


class VariantRepository(Repository[Variant]):
    """Variants (SKUs) with their product."""

    model = Variant
    load = ("product",)
    order_by = ("sku",)
    upsert_on = ("sku",)
    search_columns = ("sku", "name")

    async def by_sku(self, sku: str) -> Variant | None:
        """The variant with this SKU, or None. One statement."""
        found = await self.list(sku=sku, limit=1)
        return found[0] if found else None

    async def by_skus(self, skus: Iterable[str]) -> builtins.list[Variant]:
        """The variants with these SKUs, in the order given; unknown SKUs are left out.

        One statement (``sku = ANY(:skus)``).
        """
        wanted = builtins.list(dict.fromkeys(skus))
        if not wanted:
            return []
        by_sku = {v.sku: v for v in await self.list(any_of(Variant.sku, wanted))}
        return [by_sku[sku] for sku in wanted if sku in by_sku]

    async def adjust_stock(self, id: int, /, delta: int) -> Variant:
        """Add `delta` (negative to take) to the stock in one UPDATE, race-free.

        Taking more than is in stock raises `CheckViolation`
        (``ck_variants_stock_qty_non_negative``); a missing variant `NotFound`.
        """
        return await self.update(id, stock_qty=Variant.stock_qty + delta)


class OrderRepository(Repository[Order]):
    """Orders with their items, each with its variant and product."""

    model = Order
    load = ("items.variant.product",)
    order_by = ("-created_at",)
    search_columns = ("order_ref",)

    async def by_ref(self, order_ref: str) -> Order | None:
        """The order with this reference, or None. Two statements (order, items)."""
        found = await self.list(order_ref=order_ref, limit=1)
        return found[0] if found else None

    async def for_customer(
        self,
        customer_id: int,
        *,
        after: str | None = None,
        limit: int = 20,
        status: OrderStatus | None = None,
    ) -> Page[Order]:
        """A customer's orders, newest first, keyset-paged. Two statements per page."""
        equals: dict[str, Any] = {"customer_id": customer_id}
        if status is not None:
            equals["status"] = status
        return await self.page(after=after, limit=limit, **equals)


class ReservationRepository(Repository[StockReservation]):
    """Stock held for checkouts, keyed by (order_ref, variant)."""

    model = StockReservation
    load = ("variant",)
    order_by = ("expires_at",)
    upsert_on = ("order_ref", "variant_id")

    @staticmethod
    def is_active() -> ColumnElement[bool]:
        """Filter: reservations still holding stock."""
        return StockReservation.status == ReservationStatus.ACTIVE

    async def for_order(self, order_ref: str) -> builtins.list[StockReservation]:
        """Every reservation of one checkout, whatever its status. One statement."""
        return await self.list(order_ref=order_ref)

    async def active(
        self, *, customer_id: int | None = None, limit: int | None = None
    ) -> builtins.list[StockReservation]:
        """Active reservations, soonest to expire first (optionally one customer's)."""
        equals: dict[str, Any] = {} if customer_id is None else {"customer_id": customer_id}
        return await self.list(self.is_active(), limit=limit, **equals)

    async def claim_expired(
        self, *, now: datetime | None = None, limit: int = 100
    ) -> builtins.list[StockReservation]:
        """Lock up to `limit` active reservations past their expiry, for a sweeper.

        ``FOR UPDATE OF stock_reservations SKIP LOCKED``: concurrent sweepers
        each get different rows. `now` defaults to the transaction's time.
        """
        deadline = func.now() if now is None else now
        return await self.list(
            self.is_active(),
            StockReservation.expires_at <= deadline,
            limit=limit,
            skip_locked=True,
        )
