"""harbordb: an async data layer for PostgreSQL services.

SQLAlchemy 2.1 (asyncio) over asyncpg, safe behind a transaction pooler, with
models whose relationships can only be loaded through an explicit load plan.
"""

from harbordb.config import Settings
from harbordb.db import Database, normalize_url
from harbordb.errors import (
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
    Retryable,
    Timeout,
    Unavailable,
)
from harbordb.querycount import QueryCounter, assert_max_queries, count_queries

__all__ = [
    "CheckViolation",
    "ConfigurationError",
    "Conflict",
    "Database",
    "DatabaseError",
    "ForeignKeyViolation",
    "HarborError",
    "IntegrityError",
    "InvalidCursor",
    "LazyLoadDetected",
    "NotFound",
    "QueryCounter",
    "Retryable",
    "Settings",
    "Timeout",
    "Unavailable",
    "assert_max_queries",
    "count_queries",
    "normalize_url",
]
