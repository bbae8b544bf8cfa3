"""The endpoints. Each handler works in the request's unit of work (see `deps`)
and returns a Pydantic model it built there.

    GET  /catalog                        live products, keyset-paged (tag, search)
    GET  /products/{product_id}          one live product with variants and tags
    POST /reservations                   hold stock for a checkout (signed in)
    POST /reservations/{id}/release      give it back (signed in, own only)
    POST /checkout                       turn an order_ref's reservations into an order
    GET  /me/orders                      the signed-in customer's orders, newest first
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy import select

from harbor_commerce.api.deps import CustomerId, ReadWork, Writes
from harbor_commerce.api.schemas import (
    CatalogPage,
    CheckoutIn,
    ErrorOut,
    OrderOut,
    OrdersPage,
    ProductCardOut,
    ProductDetail,
    ReleaseOut,
    ReservationOut,
    ReserveIn,
    VariantOut,
)
from harbor_commerce.inventory import Inventory
from harbor_commerce.models import StockReservation
from harbor_commerce.uow import CommerceWork
from harbordb import NotFound
from harbordb.errors import translating

_errors = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 422, 503, 504)}
router = APIRouter(responses=_errors)  # type: ignore[arg-type]

Id = Annotated[int, Path(gt=0, le=2**63 - 1)]
MAX_PAGE = 100


@router.get("/catalog", response_model=CatalogPage, tags=["catalog"])
async def catalog(
    uow: ReadWork,
    after: Annotated[str | None, Query(max_length=4096, description="`next_cursor`")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    tag: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    search: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> CatalogPage:
    """Live products by name, with variants and tags: one statement per page (a projection)."""
    page = await uow.products.catalog_cards(after=after, limit=limit, tag=tag, search=search)
    return CatalogPage(
        items=[ProductCardOut.model_validate(card) for card in page.items],
        next_cursor=page.next_cursor,
        has_more=page.has_more,
    )


@router.get("/products/{product_id}", response_model=ProductDetail, tags=["catalog"])
async def product(uow: ReadWork, product_id: Id) -> ProductDetail:
    """A live product with its variants and tags (archived products are not found)."""
    found = await uow.products.get(product_id)
    if found.is_archived:
        raise NotFound(f"Product {product_id} not found")
    return ProductDetail(
        id=found.id,
        name=found.name,
        description=found.description,
        variants=[VariantOut.model_validate(variant) for variant in found.variants],
        tags=[tag.name for tag in found.tags],
    )


def _inventory(write: Writes) -> Inventory:
    return Inventory(write.db, retries=write.settings.retries)


@router.post(
    "/reservations",
    response_model=ReservationOut,
    status_code=status.HTTP_201_CREATED,
    tags=["checkout"],
)
async def reserve(
    body: ReserveIn, customer_id: CustomerId, write: Writes, response: Response
) -> ReservationOut:
    """Hold stock for `order_ref`; repeating the request returns the same reservation (200).

    Runs as the service (customers may not change stock levels themselves),
    for the customer the token names.
    """
    inventory = _inventory(write)

    async def work(uow: CommerceWork) -> ReservationOut:
        held = await inventory.reserve(
            body.variant_id,
            body.qty,
            body.order_ref,
            ttl=body.ttl_seconds,
            customer_id=customer_id,
            uow=uow,
        )
        return ReservationOut.model_validate(held)

    result = await write(work, as_caller=False)
    if not result.created:
        response.status_code = status.HTTP_200_OK
    return result


@router.post("/reservations/{reservation_id}/release", response_model=ReleaseOut, tags=["checkout"])
async def release(reservation_id: Id, customer_id: CustomerId, write: Writes) -> ReleaseOut:
    """Give a reservation's stock back; another customer's reservation is not found."""
    inventory = _inventory(write)
    owner = select(StockReservation.customer_id).where(StockReservation.id == reservation_id)

    async def work(uow: CommerceWork) -> ReleaseOut:
        with translating():
            holder = (await uow.session.execute(owner)).one_or_none()
        if holder is None or holder.customer_id != customer_id:
            raise NotFound(f"reservation {reservation_id} does not exist")
        released = await inventory.release(reservation_id, uow=uow)
        return ReleaseOut(id=reservation_id, released=released)

    return await write(work, as_caller=False)


@router.post("/checkout", response_model=OrderOut, tags=["checkout"])
async def checkout(body: CheckoutIn, customer_id: CustomerId, write: Writes) -> OrderOut:
    """Turn the order_ref's reservations into an order; a repeat returns that same order.

    Runs in the customer's role: row-level security shows it only its own
    reservations and lets it write only its own order.
    """
    inventory = _inventory(write)

    async def work(uow: CommerceWork) -> OrderOut:
        order = await inventory.checkout(body.order_ref, customer_id, uow=uow)
        return OrderOut.model_validate(order)

    return await write(work)


@router.get("/me/orders", response_model=OrdersPage, tags=["orders"])
async def my_orders(
    uow: ReadWork,
    customer_id: CustomerId,
    after: Annotated[str | None, Query(max_length=4096)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> OrdersPage:
    """The signed-in customer's orders with their lines, newest first.

    The query has no customer filter of its own: row-level security, in the
    unit of work's ``authenticated`` role with the token's ``sub``, is the filter.
    """
    page = await uow.orders.page(after=after, limit=limit, load=("items",))
    return OrdersPage(
        items=[OrderOut.model_validate(order) for order in page.items],
        next_cursor=page.next_cursor,
        has_more=page.has_more,
    )
