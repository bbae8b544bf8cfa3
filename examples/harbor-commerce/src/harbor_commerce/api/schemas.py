"""The API's request and response bodies (Pydantic).

Responses are built from read models (`ProductCard`) or from ORM objects
whose relationships the repository loaded eagerly, inside the request's unit
of work: `from_attributes` reads only what is already loaded, and every
relationship is ``lazy="raise"``, so a missing load plan fails loudly in
tests instead of querying during serialisation.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from harbor_commerce.inventory import MAX_QTY, MAX_TTL, MIN_TTL, ORDER_REF_LENGTH
from harbor_commerce.models import OrderStatus, ReservationStatus


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class VariantOut(_Out):
    id: int
    sku: str
    name: str
    price_cents: int
    stock_qty: int
    in_stock: bool


class ProductCardOut(_Out):
    id: int
    name: str
    variants: list[VariantOut]
    tags: list[str]


class CatalogPage(_Out):
    items: list[ProductCardOut]
    next_cursor: str | None = Field(description="Pass as `after` for the next page; null: last")
    has_more: bool


class ProductDetail(_Out):
    id: int
    name: str
    description: str
    variants: list[VariantOut]
    tags: list[str]


OrderRef = Field(
    min_length=1,
    max_length=ORDER_REF_LENGTH,
    pattern=r"\S",
    description="The client's name for one checkout attempt; reuse it to retry safely",
)


class ReserveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant_id: int = Field(gt=0, le=2**63 - 1)
    qty: int = Field(gt=0, le=MAX_QTY)
    order_ref: str = OrderRef
    ttl_seconds: float = Field(
        default=900.0, ge=MIN_TTL.total_seconds(), le=MAX_TTL.total_seconds()
    )


class ReservationOut(_Out):
    id: int
    variant_id: int
    order_ref: str
    qty: int
    status: ReservationStatus
    expires_at: datetime
    created: bool = Field(description="False when an identical earlier request made it")


class ReleaseOut(_Out):
    id: int
    released: bool = Field(description="False when it no longer held stock (a no-op)")


class CheckoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_ref: str = OrderRef


class OrderLineOut(_Out):
    variant_id: int
    qty: int
    unit_price_cents: int


class OrderOut(_Out):
    id: int
    order_ref: str
    status: OrderStatus
    total_cents: int
    created_at: datetime
    lines: list[OrderLineOut] = Field(validation_alias="items")


class OrdersPage(_Out):
    items: list[OrderOut]
    next_cursor: str | None
    has_more: bool


class ErrorBody(BaseModel):
    code: str = Field(description="A stable, machine-readable name of the problem")
    message: str = Field(description="For people; never carries SQL or bound values")


class ErrorOut(BaseModel):
    error: ErrorBody
