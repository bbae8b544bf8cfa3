"""The HTTP API end to end: httpx's ASGI transport, the real database, directly
and through PgBouncer. Every endpoint, its statement budget, row-level
security across two customers, and an idempotent retried checkout.

Rows are committed (the API commits) under `PREFIX` and deleted after each test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from harbor_commerce.api import ApiSettings, create_app
from harbor_commerce.api.auth import issue
from harbor_commerce.models import Product, Tag, Variant
from harbor_commerce.seed import delete_seeded, new_order_ref, seed_customer, seed_product
from harbor_commerce.uow import CommerceWork
from harbordb import Database, assert_max_queries

PREFIX = "apitest"
KEY = "a-test-signing-key-that-is-long-enough-for-hs256"
SETTINGS = ApiSettings(jwt_key=KEY)
DIRECT_AND_POOLED = ["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)]


@pytest.fixture
async def _committed_rows(database: Database[CommerceWork]) -> AsyncIterator[None]:
    """Delete what the test committed under PREFIX."""
    yield
    await delete_seeded(database, PREFIX)
    async with database.unit_of_work() as uow:
        await uow.tags.delete_where(Tag.name.startswith(f"{PREFIX}-"))
        await uow.commit()


@pytest.fixture(params=DIRECT_AND_POOLED)
def api_db(request: pytest.FixtureRequest, _committed_rows: None) -> Database[CommerceWork]:
    """The suite's database, direct or through PgBouncer (sync, to request an async fixture)."""
    name = "database" if request.param == "direct" else "pooled_database"
    db: Database[CommerceWork] = request.getfixturevalue(name)
    return db


@pytest.fixture
async def client(api_db: Database[CommerceWork]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(SETTINGS, database=api_db))
    async with httpx.AsyncClient(transport=transport, base_url="http://harbor.test") as client:
        yield client


def bearer(customer_id: int, key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(customer_id, key)}"}


@dataclass
class Catalog:
    word: str  # in every product name: the search that finds only this test's products
    tag: str  # on the first two products
    products: list[Product]


async def seed_catalog(db: Database[CommerceWork]) -> Catalog:
    """Three live products (two tagged) and one archived, named '{PREFIX} {word} a|b|c|z'."""
    word = uuid.uuid4().hex[:10]
    tag_name = f"{PREFIX}-{word}"
    async with db.unit_of_work() as uow:
        tag = Tag(name=tag_name)
        products = [
            Product(
                name=f"{PREFIX} {word} {letter}",
                description=f"about {letter}",
                variants=[
                    Variant(
                        sku=f"{PREFIX}-{word}-{letter}-{i}",
                        name=f"v{i}",
                        price_cents=250,
                        stock_qty=5 * i,
                    )
                    for i in range(2)
                ],
                tags=[tag] if letter in "ab" else [],
            )
            for letter in "abc"
        ]
        uow.session.add_all(products)
        await uow.commit()
    await seed_product(db, f"{PREFIX} {word} z", [3], archived=True)
    return Catalog(word, tag_name, products)


# -- reads ----------------------------------------------------------------------------


async def test_catalog_pages_by_keyset_with_search_and_tag(
    client: httpx.AsyncClient, api_db: Database[CommerceWork]
) -> None:
    shop = await seed_catalog(api_db)
    with assert_max_queries(api_db, 2):  # settings, the catalog projection
        first = await client.get("/catalog", params={"search": shop.word, "limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert [item["name"] for item in page["items"]] == [f"{PREFIX} {shop.word} {x}" for x in "ab"]
    assert page["has_more"] is True
    card = page["items"][0]
    assert card["tags"] == [shop.tag]
    assert [(v["stock_qty"], v["in_stock"]) for v in card["variants"]] == [(0, False), (5, True)]

    second = await client.get(
        "/catalog", params={"search": shop.word, "limit": 2, "after": page["next_cursor"]}
    )
    assert second.status_code == 200
    assert [item["name"] for item in second.json()["items"]] == [f"{PREFIX} {shop.word} c"]
    assert second.json()["next_cursor"] is None  # and the archived 'z' is not listed

    tagged = await client.get("/catalog", params={"tag": shop.tag})
    assert [item["name"][-1] for item in tagged.json()["items"]] == ["a", "b"]


async def test_product_detail_and_not_found(
    client: httpx.AsyncClient, api_db: Database[CommerceWork]
) -> None:
    shop = await seed_catalog(api_db)
    product = shop.products[0]
    with assert_max_queries(api_db, 4):  # settings, product, variants, tags
        found = await client.get(f"/products/{product.id}")
    assert found.status_code == 200
    body = found.json()
    assert (body["name"], body["description"], body["tags"]) == (
        product.name,
        "about a",
        [shop.tag],
    )
    assert [v["sku"] for v in body["variants"]] == [v.sku for v in product.variants]

    archived = await client.get("/catalog", params={"search": f"{shop.word} z"})
    assert archived.json()["items"] == []
    async with api_db.unit_of_work(read_only=True) as uow:
        (z,) = await uow.products.list(Product.name.startswith(f"{PREFIX} {shop.word} z"))
        archived_id = z.id
    for missing in (archived_id, 2**62):
        response = await client.get(f"/products/{missing}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


async def test_bad_cursor_is_400_and_bad_parameters_422_without_echo(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/catalog", params={"after": "bm90LWEtY3Vyc29y"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_cursor"

    response = await client.get("/catalog", params={"limit": 0})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert "limit" in response.json()["error"]["message"]

    response = await client.get("/products/0")
    assert response.status_code == 422


# -- auth -------------------------------------------------------------------------------


async def test_tokens_are_verified(client: httpx.AsyncClient) -> None:
    import jwt

    good = {"sub": "1", "exp": 2**40}
    tokens = {
        "wrong key": jwt.encode(good, "another-key-that-is-also-32-bytes-long!!", "HS256"),
        "expired": jwt.encode({"sub": "1", "exp": 1}, KEY, "HS256"),
        "no sub": jwt.encode({"exp": 2**40}, KEY, "HS256"),
        "sub not a customer id": jwt.encode({"sub": "1 OR 1=1", "exp": 2**40}, KEY, "HS256"),
        "alg none": jwt.encode(good, None, "none"),
        "garbage": "not.a.token",
    }
    for reason, token in tokens.items():
        response = await client.get("/me/orders", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, reason
        assert response.json()["error"]["code"] == "unauthenticated"
        # A bad token on a public endpoint is refused too, not read as anonymous.
        assert (
            await client.get("/catalog", headers={"Authorization": f"Bearer {token}"})
        ).status_code == 401
    for path in ("/me/orders",):
        assert (await client.get(path)).status_code == 401
    for path, body in (("/reservations", {}), ("/reservations/1/release", None), ("/checkout", {})):
        assert (await client.post(path, json=body)).status_code == 401, path


# -- writes -----------------------------------------------------------------------------


async def test_reserve_is_idempotent_and_refuses_short_stock(
    client: httpx.AsyncClient, api_db: Database[CommerceWork]
) -> None:
    customer = await seed_customer(api_db, PREFIX)
    product = await seed_product(api_db, PREFIX, [3])
    variant_id = product.variants[0].id
    ref = new_order_ref(PREFIX)
    body = {"variant_id": variant_id, "qty": 2, "order_ref": ref}
    with assert_max_queries(api_db, 3):  # settings, claim, take stock
        first = await client.post("/reservations", json=body, headers=bearer(customer.id))
    assert first.status_code == 201
    held = first.json()
    assert (held["qty"], held["status"], held["created"]) == (2, "active", True)

    again = await client.post("/reservations", json=body, headers=bearer(customer.id))
    assert again.status_code == 200  # the retried request finds its reservation
    assert (again.json()["id"], again.json()["created"]) == (held["id"], False)

    short = await client.post(
        "/reservations",
        json={**body, "order_ref": new_order_ref(PREFIX)},
        headers=bearer(customer.id),
    )
    assert short.status_code == 409
    assert short.json()["error"]["code"] == "insufficient_stock"

    unknown = await client.post(
        "/reservations", json={**body, "variant_id": 2**62}, headers=bearer(customer.id)
    )
    assert unknown.status_code == 404

    secret = "do-not-echo-this-ref"
    invalid = await client.post(
        "/reservations", json={**body, "qty": 0, "order_ref": secret}, headers=bearer(customer.id)
    )
    assert invalid.status_code == 422
    assert secret not in invalid.text
    async with api_db.unit_of_work(read_only=True) as uow:
        assert (await uow.variants.get(variant_id)).stock_qty == 1


async def test_release_gives_stock_back_once_and_only_to_its_owner(
    client: httpx.AsyncClient, api_db: Database[CommerceWork]
) -> None:
    owner, other = await seed_customer(api_db, PREFIX), await seed_customer(api_db, PREFIX)
    product = await seed_product(api_db, PREFIX, [3])
    variant_id = product.variants[0].id
    held = await client.post(
        "/reservations",
        json={"variant_id": variant_id, "qty": 3, "order_ref": new_order_ref(PREFIX)},
        headers=bearer(owner.id),
    )
    path = f"/reservations/{held.json()['id']}/release"

    refused = await client.post(path, headers=bearer(other.id))
    assert refused.status_code == 404  # another customer's reservation does not exist for you
    with assert_max_queries(api_db, 3):  # settings, owner, release
        released = await client.post(path, headers=bearer(owner.id))
    assert released.json() == {"id": held.json()["id"], "released": True}
    again = await client.post(path, headers=bearer(owner.id))
    assert again.json()["released"] is False
    async with api_db.unit_of_work(read_only=True) as uow:
        assert (await uow.variants.get(variant_id)).stock_qty == 3


async def _reserved(
    client: httpx.AsyncClient, customer_id: int, variant_ids: list[int], qty: int = 1
) -> str:
    ref = new_order_ref(PREFIX)
    for variant_id in variant_ids:
        response = await client.post(
            "/reservations",
            json={"variant_id": variant_id, "qty": qty, "order_ref": ref},
            headers=bearer(customer_id),
        )
        assert response.status_code == 201, response.text
    return ref


async def test_checkout_is_idempotent_when_retried_and_concurrent(
    client: httpx.AsyncClient, api_db: Database[CommerceWork]
) -> None:
    customer = await seed_customer(api_db, PREFIX)
    product = await seed_product(api_db, PREFIX, [5, 5], price_cents=300)
    ref = await _reserved(client, customer.id, [v.id for v in product.variants], qty=2)

    with assert_max_queries(api_db, 5):  # settings, lock, order, items, reservations
        first = await client.post("/checkout", json={"order_ref": ref}, headers=bearer(customer.id))
    assert first.status_code == 200, first.text
    order = first.json()
    assert (order["order_ref"], order["status"], order["total_cents"]) == (ref, "pending", 1200)
    assert [(line["qty"], line["unit_price_cents"]) for line in order["lines"]] == [(2, 300)] * 2

    # The client lost the response and retries, twice at once: the same order each time.
    retries = await asyncio.gather(
        *(
            client.post("/checkout", json={"order_ref": ref}, headers=bearer(customer.id))
            for _ in range(2)
        )
    )
    assert [r.status_code for r in retries] == [200, 200]
    assert {r.json()["id"] for r in retries} == {order["id"]}
    assert all(r.json()["lines"] == order["lines"] for r in retries)


async def test_concurrent_first_checkouts_make_one_order(
    client: httpx.AsyncClient, api_db: Database[CommerceWork]
) -> None:
    customer = await seed_customer(api_db, PREFIX)
    product = await seed_product(api_db, PREFIX, [5])
    ref = await _reserved(client, customer.id, [product.variants[0].id])
    responses = await asyncio.gather(
        *(
            client.post("/checkout", json={"order_ref": ref}, headers=bearer(customer.id))
            for _ in range(4)
        )
    )
    assert [r.status_code for r in responses] == [200] * 4
    assert len({r.json()["id"] for r in responses}) == 1


# -- row-level security -------------------------------------------------------------------


async def test_each_customer_sees_and_checks_out_only_their_own(
    client: httpx.AsyncClient, api_db: Database[CommerceWork]
) -> None:
    alice, bob = await seed_customer(api_db, PREFIX), await seed_customer(api_db, PREFIX)
    product = await seed_product(api_db, PREFIX, [10])
    variant = [product.variants[0].id]
    orders: dict[int, list[str]] = {alice.id: [], bob.id: []}
    for who, count in ((alice.id, 2), (bob.id, 1)):
        for _ in range(count):
            ref = await _reserved(client, who, variant)
            response = await client.post("/checkout", json={"order_ref": ref}, headers=bearer(who))
            assert response.status_code == 200
            orders[who].append(ref)

    for who in (alice.id, bob.id):
        with assert_max_queries(api_db, 3):  # settings, orders, items
            mine = await client.get("/me/orders", headers=bearer(who))
        assert mine.status_code == 200
        assert sorted(o["order_ref"] for o in mine.json()["items"]) == sorted(orders[who])

    first = await client.get("/me/orders", params={"limit": 1}, headers=bearer(alice.id))
    rest = await client.get(
        "/me/orders",
        params={"limit": 1, "after": first.json()["next_cursor"]},
        headers=bearer(alice.id),
    )
    assert [o["order_ref"] for o in first.json()["items"] + rest.json()["items"]] == list(
        reversed(orders[alice.id])
    )

    # Bob cannot check out Alice's reservations: under his role they do not exist.
    alices_ref = await _reserved(client, alice.id, variant)
    stolen = await client.post("/checkout", json={"order_ref": alices_ref}, headers=bearer(bob.id))
    assert stolen.status_code == 404
    mine = await client.post("/checkout", json={"order_ref": alices_ref}, headers=bearer(alice.id))
    assert mine.status_code == 200


async def test_a_traced_request_shows_its_unit_of_work_and_every_statement(
    client: httpx.AsyncClient, api_db: Database[CommerceWork]
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from harbordb.observability import instrument

    shop = await seed_catalog(api_db)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observed = instrument(api_db, metrics=False, tracer_provider=provider)
    try:
        response = await client.get("/catalog", params={"search": shop.word})
    finally:
        observed.remove()
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    (work,) = [s for s in spans if s.name == "harbordb.unit_of_work"]
    assert work.attributes is not None
    assert work.attributes["harbordb.role"] == "anon"
    # The settings, and the catalog projection sent on the driver's connection.
    assert work.attributes["harbordb.statements"] == 2
    assert work.attributes["harbordb.rows"] == 1 + 3
    assert work.context is not None
    statements = [s for s in spans if s.parent and s.parent.span_id == work.context.span_id]
    assert [s.name for s in statements] == ["SELECT", "SELECT"]
    assert statements[1].attributes is not None
    assert statements[1].attributes["db.response.returned_rows"] == 3
    assert shop.word not in str([dict(s.attributes or {}) for s in spans])  # bound, not shown
