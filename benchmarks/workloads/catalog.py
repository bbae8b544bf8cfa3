"""W1 (one product with its variants) and W2 (a catalog page with variants and tags).

W2's page is the catalog's first page as `ProductRepository.catalog_page` serves
it: the first 50 live products by name (id breaks ties). Every variant returns
products + variants + tag links loaded (`repository-view` and `projection`:
cards, variant lines and tag names, `PRODUCT_CARDS`; `asyncpg-in-cols` and
`asyncpg-one` read those same columns raw).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import joinedload, lazyload, selectinload, subqueryload

from benchmarks import named, peer, psycopg_peer, psycopg_raw
from benchmarks.core import Case, Lab, Op, Variant, Workload
from benchmarks.workloads.structs import LIVE_CARD_STRUCTS
from harbor_commerce.models import Product, Tag, product_tags
from harbor_commerce.models import Variant as VariantModel
from harbor_commerce.readmodels import PRODUCT_CARDS

_PRODUCTS = Product.__table__
_VARIANTS = VariantModel.__table__
_TAGS = Tag.__table__
ORM_STRATEGIES: dict[str, Any] = {
    "selectinload": selectinload,
    "joinedload": joinedload,
    "subqueryload": subqueryload,
}


def _graph_size(products: Any) -> int:
    return sum(1 + len(p.variants) + len(p.tags) for p in products)


# -- W1 -------------------------------------------------------------------


def _product(lab: Lab) -> Select[Product]:
    return select(Product).where(Product.id == lab.dataset.product_id)


def w1_nplus1(lab: Lab) -> Op:
    async def op() -> int:
        async with lab.db.session() as session:
            statement = _product(lab).options(lazyload(Product.variants))
            product = (await session.scalars(statement)).one()
            return 1 + len(await product.awaitable_attrs.variants)

    return op


def w1_orm(lab: Lab, strategy: Any) -> Op:
    statement = _product(lab).options(strategy(Product.variants))

    async def op() -> int:
        async with lab.db.session() as session:
            product = (await session.scalars(statement)).unique().one()
            return 1 + len(product.variants)

    return op


def w1_repository(lab: Lab) -> Op:
    async def op() -> int:
        async with lab.db.unit_of_work() as uow:
            product = await uow.products.get(lab.dataset.product_id, load=("variants",))
            return 1 + len(product.variants)

    return op


def w1_core_in(lab: Lab) -> Op:
    parent = select(_PRODUCTS).where(_PRODUCTS.c.id == lab.dataset.product_id)

    async def op() -> int:
        async with lab.db.engine.connect() as connection:
            products = (await connection.execute(parent)).all()
            children = (
                select(_VARIANTS)
                .where(_VARIANTS.c.product_id.in_([row.id for row in products]))
                .order_by(_VARIANTS.c.product_id, _VARIANTS.c.id)
            )
            variants = (await connection.execute(children)).all()
        return len(products) + len(variants)

    return op


def w1_asyncpg_in(lab: Lab) -> Op:
    async def op() -> int:
        async with lab.raw.transaction():
            products = await lab.raw.fetch(
                "SELECT * FROM products WHERE id = $1", lab.dataset.product_id
            )
            variants = await lab.raw.fetch(
                "SELECT * FROM variants WHERE product_id = ANY($1::bigint[]) "
                "ORDER BY product_id, id",
                [row["id"] for row in products],
            )
        return len(products) + len(variants)

    return op


_W1_JSON = """
SELECT p.*,
       (SELECT coalesce(json_agg(v ORDER BY v.id), '[]')
          FROM variants v WHERE v.product_id = p.id) AS variants
  FROM products p
 WHERE p.id = $1
"""


def w1_asyncpg_json(lab: Lab) -> Op:
    async def op() -> int:
        row = await lab.raw.fetchrow(_W1_JSON, lab.dataset.product_id)
        return 1 + len(json.loads(row["variants"]))

    return op


async def _w1_cases(lab: Lab) -> list[Case]:
    variants = [
        Variant("n+1", w1_nplus1(lab)),
        *(Variant(key, w1_orm(lab, strategy)) for key, strategy in ORM_STRATEGIES.items()),
        Variant("repository", w1_repository(lab)),
        Variant("core-in", w1_core_in(lab)),
        Variant("asyncpg-in", w1_asyncpg_in(lab)),
        Variant("asyncpg-json", w1_asyncpg_json(lab)),
    ]
    case = Case(f"product {lab.dataset.product_id}", {}, variants)
    await named.add_variants(lab, case, {"repository": w1_repository, "asyncpg-in": w1_asyncpg_in})
    psycopg_peer.add(case, lab, lambda on: w1_orm(on, selectinload), w1_core_in, psycopg_raw.w1_in)
    return [case]


W1 = Workload(
    key="W1",
    title="one product by primary key, with its variants",
    description="A live product and its 4 variants (one-to-many).",
    unit="op",
    floor="asyncpg-json",
    build=_w1_cases,
)


# -- W2 -------------------------------------------------------------------


def _page(lab: Lab) -> Select[Product]:
    return (
        select(Product)
        .where(Product.archived_at.is_(None))
        .order_by(Product.name, Product.id)
        .limit(lab.sizes.page_size)
    )


def w2_nplus1(lab: Lab) -> Op:
    async def op() -> int:
        async with lab.db.session() as session:
            statement = _page(lab).options(lazyload(Product.variants), lazyload(Product.tags))
            products = (await session.scalars(statement)).all()
            loaded = len(products)
            for product in products:
                loaded += len(await product.awaitable_attrs.variants)
                loaded += len(await product.awaitable_attrs.tags)
            return loaded

    return op


def w2_orm(lab: Lab, strategy: Any) -> Op:
    statement = _page(lab).options(strategy(Product.variants), strategy(Product.tags))

    async def op() -> int:
        async with lab.db.session() as session:
            return _graph_size((await session.scalars(statement)).unique().all())

    return op


def w2_repository(lab: Lab) -> Op:
    async def op() -> int:
        async with lab.db.unit_of_work() as uow:
            page = await uow.products.catalog_page(limit=lab.sizes.page_size)
            return _graph_size(page.items)

    return op


def w2_repository_view(lab: Lab) -> Op:
    """The same page as read-only `ProductCard`s: Core rows, no ORM objects."""

    async def op() -> int:
        async with lab.db.unit_of_work() as uow:
            page = await uow.products.catalog_cards(limit=lab.sizes.page_size)
            return sum(1 + len(card.variants) + len(card.tags) for card in page.items)

    return op


def w2_core_in(lab: Lab) -> Op:
    parents = (
        select(_PRODUCTS)
        .where(_PRODUCTS.c.archived_at.is_(None))
        .order_by(_PRODUCTS.c.name, _PRODUCTS.c.id)
        .limit(lab.sizes.page_size)
    )

    async def op() -> int:
        async with lab.db.engine.connect() as connection:
            products = (await connection.execute(parents)).all()
            ids = [row.id for row in products]
            variants = select(_VARIANTS).where(_VARIANTS.c.product_id.in_(ids))
            tags = (
                select(product_tags.c.product_id, _TAGS)
                .join(_TAGS, _TAGS.c.id == product_tags.c.tag_id)
                .where(product_tags.c.product_id.in_(ids))
            )
            by_product: dict[int, list[Any]] = defaultdict(list)
            for row in await connection.execute(variants.order_by(_VARIANTS.c.id)):
                by_product[row.product_id].append(row)
            for row in await connection.execute(tags):
                by_product[row.product_id].append(row)
        return len(products) + sum(len(by_product[row.id]) for row in products)

    return op


_W2_PAGE = """
SELECT * FROM products WHERE archived_at IS NULL ORDER BY name, id LIMIT $1
"""


def _w2_raw(lab: Lab, page: str, variants: str, tags: str) -> Op:
    """Raw asyncpg in one transaction: the page, then its variants and its tags, each
    child statement with the page's ids as one array parameter."""

    async def op() -> int:
        async with lab.raw.transaction():
            products = await lab.raw.fetch(page, lab.sizes.page_size)
            ids = [row["id"] for row in products]
            by_product: dict[int, list[Any]] = defaultdict(list)
            for sql in (variants, tags):
                for row in await lab.raw.fetch(sql, ids):
                    by_product[row["product_id"]].append(row)
        return len(products) + sum(len(by_product[row["id"]]) for row in products)

    return op


def w2_asyncpg_in(lab: Lab) -> Op:
    return _w2_raw(
        lab,
        _W2_PAGE,
        "SELECT * FROM variants WHERE product_id = ANY($1::bigint[]) ORDER BY id",
        "SELECT pt.product_id, t.* FROM product_tags pt JOIN tags t ON t.id = pt.tag_id "
        "WHERE pt.product_id = ANY($1::bigint[])",
    )


_W2_JSON = """
SELECT p.*,
       (SELECT coalesce(json_agg(v ORDER BY v.id), '[]')
          FROM variants v WHERE v.product_id = p.id) AS variants,
       (SELECT coalesce(json_agg(t ORDER BY t.id), '[]')
          FROM product_tags pt JOIN tags t ON t.id = pt.tag_id
         WHERE pt.product_id = p.id) AS tags
  FROM products p
 WHERE p.archived_at IS NULL
 ORDER BY p.name, p.id
 LIMIT $1
"""


def w2_asyncpg_json(lab: Lab) -> Op:
    async def op() -> int:
        products = await lab.raw.fetch(_W2_JSON, lab.sizes.page_size)
        return sum(
            1 + len(json.loads(row["variants"])) + len(json.loads(row["tags"])) for row in products
        )

    return op


def _card_size(cards: Any) -> int:
    return sum(1 + len(card.variants) + len(card.tags) for card in cards)


_LIVE_CARDS = PRODUCT_CARDS.where(lambda product: product.archived_at.is_(None))


def w2_projection(lab: Lab, *, structs: bool = False) -> Op:
    """`harbordb.Projection` straight from a unit of work (shape chosen per read: one
    statement for a page of 50), frozen cards; `structs`: msgspec Structs."""
    read = LIVE_CARD_STRUCTS if structs else _LIVE_CARDS

    async def op() -> int:
        async with lab.db.unit_of_work() as uow:
            page = await read.page(uow, limit=lab.sizes.page_size, order_by=("name",))
            return _card_size(page.items)

    return op


def w2_asyncpg_in_cols(lab: Lab) -> Op:
    """`asyncpg-in` reading only the columns a card shows (as the projections do)."""
    return _w2_raw(
        lab,
        "SELECT id, name FROM products WHERE archived_at IS NULL ORDER BY name, id LIMIT $1",
        "SELECT product_id, id, sku, name, price_cents, stock_qty FROM variants "
        "WHERE product_id = ANY($1::bigint[]) ORDER BY id",
        "SELECT pt.product_id, t.name FROM product_tags pt JOIN tags t "
        "ON t.id = pt.tag_id WHERE pt.product_id = ANY($1::bigint[]) ORDER BY t.name",
    )


_W2_ONE = """
SELECT p.id, p.name,
       (SELECT array_agg(ROW(v.id, v.sku, v.name, v.price_cents, v.stock_qty) ORDER BY v.id)
          FROM variants v WHERE v.product_id = p.id) AS variants,
       (SELECT array_agg(t.name ORDER BY t.name)
          FROM product_tags pt JOIN tags t ON t.id = pt.tag_id
         WHERE pt.product_id = p.id) AS tags
  FROM products p
 WHERE p.archived_at IS NULL
 ORDER BY p.name, p.id
 LIMIT $1
"""


def w2_asyncpg_one(lab: Lab) -> Op:
    """Raw asyncpg, one statement with nested array_agg(ROW(...)): the projection's shape."""

    async def op() -> int:
        products = await lab.raw.fetch(_W2_ONE, lab.sizes.page_size + 1)
        return sum(
            1 + len(row["variants"] or ()) + len(row["tags"] or ())
            for row in products[: lab.sizes.page_size]
        )

    return op


async def _w2_cases(lab: Lab) -> list[Case]:
    variants = [
        Variant("n+1", w2_nplus1(lab)),
        *(Variant(key, w2_orm(lab, strategy)) for key, strategy in ORM_STRATEGIES.items()),
        Variant("repository", w2_repository(lab)),
        Variant("repository-view", w2_repository_view(lab)),
        Variant("core-in", w2_core_in(lab)),
        Variant("projection", w2_projection(lab)),
        Variant("projection-struct", w2_projection(lab, structs=True)),
        Variant("asyncpg-in", w2_asyncpg_in(lab)),
        Variant("asyncpg-in-cols", w2_asyncpg_in_cols(lab)),
        Variant("asyncpg-one", w2_asyncpg_one(lab)),
        Variant("asyncpg-json", w2_asyncpg_json(lab)),
    ]
    case = Case(f"page of {lab.sizes.page_size}", {"page_size": lab.sizes.page_size}, variants)
    await named.add_variants(
        lab,
        case,
        {"repository": w2_repository, "projection": w2_projection, "asyncpg-in": w2_asyncpg_in},
    )
    if lab.tortoise:
        case.variants.append(Variant("tortoise", peer.catalog_page(lab.sizes.page_size)))
    else:
        case.skipped["tortoise"] = "Tortoise ORM not installed"
    psycopg_peer.add(case, lab, lambda on: w2_orm(on, selectinload), w2_core_in, psycopg_raw.w2_in)
    return [case]


W2 = Workload(
    key="W2",
    title="a catalog page: products with variants and tags",
    description=(
        "The first catalog page: 50 live products by name, each with its 4 variants "
        "(one-to-many) and 3 tags (many-to-many)."
    ),
    unit="op",
    floor="asyncpg-json",
    build=_w2_cases,
)
