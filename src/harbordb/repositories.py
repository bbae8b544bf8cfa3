"""The Harbor Commerce repositories (work in progress)."""

from __future__ import annotations

from harbordb.models import Customer, Order, Product, StockReservation, Variant
from harbordb.repository import Repository


class CustomerRepository(Repository[Customer]):
    model = Customer


class ProductRepository(Repository[Product]):
    model = Product


class VariantRepository(Repository[Variant]):
    model = Variant


class OrderRepository(Repository[Order]):
    model = Order


class ReservationRepository(Repository[StockReservation]):
    model = StockReservation
