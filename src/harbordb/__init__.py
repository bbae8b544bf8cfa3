"""harbordb: an async data layer for PostgreSQL services.

SQLAlchemy 2.1 (asyncio) over asyncpg, safe behind a transaction pooler, with
models whose relationships can only be loaded through an explicit load plan.
"""

from harbordb.cache import CatalogCache, MemoryCache
from harbordb.config import Settings
from harbordb.db import Database, normalize_url
from harbordb.errors import (
    AfterCommitError,
    CheckViolation,
    ConfigurationError,
    Conflict,
    DatabaseError,
    ForeignKeyViolation,
    HarborError,
    IntegrityError,
    InvalidCursor,
    LazyLoadDetected,
    NotFound,
    NPlusOneWarning,
    PermissionDenied,
    Retryable,
    Timeout,
    Unavailable,
    UnitOfWorkClosed,
)
from harbordb.inventory import (
    CheckoutFailed,
    InsufficientStock,
    Inventory,
    Reservation,
    ReservationExpired,
)
from harbordb.pagination import OffsetPage, Page
from harbordb.querycount import QueryCounter, assert_max_queries, count_queries
from harbordb.readmodels import CustomerHistory, OrderLine, OrderView, ProductCard, VariantLine
from harbordb.repositories import (
    CustomerRepository,
    OrderRepository,
    ProductRepository,
    ReservationRepository,
    TagRepository,
    VariantRepository,
)
from harbordb.repository import Repository, any_of, contains, escape_like
from harbordb.sweeper import run_sweeper
from harbordb.uow import UnitOfWork

__all__ = [
    "AfterCommitError",
    "CatalogCache",
    "CheckViolation",
    "CheckoutFailed",
    "ConfigurationError",
    "Conflict",
    "CustomerHistory",
    "CustomerRepository",
    "Database",
    "DatabaseError",
    "ForeignKeyViolation",
    "HarborError",
    "InsufficientStock",
    "IntegrityError",
    "InvalidCursor",
    "Inventory",
    "LazyLoadDetected",
    "MemoryCache",
    "NPlusOneWarning",
    "NotFound",
    "OffsetPage",
    "OrderLine",
    "OrderRepository",
    "OrderView",
    "Page",
    "PermissionDenied",
    "ProductCard",
    "ProductRepository",
    "QueryCounter",
    "Repository",
    "Reservation",
    "ReservationExpired",
    "ReservationRepository",
    "Retryable",
    "Settings",
    "TagRepository",
    "Timeout",
    "Unavailable",
    "UnitOfWork",
    "UnitOfWorkClosed",
    "VariantLine",
    "VariantRepository",
    "any_of",
    "assert_max_queries",
    "contains",
    "count_queries",
    "escape_like",
    "normalize_url",
    "run_sweeper",
]
