"""The Harbor Commerce models and their declarative `Base`."""

from harbordb.models.base import NAMING_CONVENTION, Base, Timestamps
from harbordb.models.commerce import (
    Customer,
    Order,
    OrderItem,
    OrderStatus,
    Product,
    ReservationStatus,
    StockReservation,
    Tag,
    Variant,
    product_tags,
)

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "Customer",
    "Order",
    "OrderItem",
    "OrderStatus",
    "Product",
    "ReservationStatus",
    "StockReservation",
    "Tag",
    "Timestamps",
    "Variant",
    "product_tags",
]
