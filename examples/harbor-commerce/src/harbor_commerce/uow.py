"""Harbor Commerce's unit of work and `Database`: harbordb configured for the shop."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from harbor_commerce.repositories import (
    CustomerRepository,
    OrderRepository,
    ProductRepository,
    ReservationRepository,
    TagRepository,
    VariantRepository,
)
from harbordb import Database, UnitOfWork

ROLES: Mapping[str, str] = MappingProxyType(
    {"anon": "harbordb_anon", "authenticated": "harbordb_authenticated"}
)
"""The roles a Harbor unit of work may assume (created by migration 0002)."""


class CommerceWork(UnitOfWork):
    """A unit of work with the shop's repositories."""

    @property
    def customers(self) -> CustomerRepository:
        return self.repository(CustomerRepository)

    @property
    def products(self) -> ProductRepository:
        return self.repository(ProductRepository)

    @property
    def tags(self) -> TagRepository:
        return self.repository(TagRepository)

    @property
    def variants(self) -> VariantRepository:
        return self.repository(VariantRepository)

    @property
    def orders(self) -> OrderRepository:
        return self.repository(OrderRepository)

    @property
    def reservations(self) -> ReservationRepository:
        return self.repository(ReservationRepository)


DATABASE_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {"unit_of_work": CommerceWork, "roles": ROLES}
)
"""What Harbor passes to `Database` besides the URL (the test plugin takes it too)."""


def commerce_database(url: str | None = None, **options: Any) -> Database[CommerceWork]:
    """`Database(url, unit_of_work=CommerceWork, roles=ROLES, **options)`."""
    return Database(url, unit_of_work=CommerceWork, roles=ROLES, **options)
