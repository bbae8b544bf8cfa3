"""harbordb: an async data layer for PostgreSQL services.

SQLAlchemy 2.1 (asyncio) over asyncpg, safe behind a transaction pooler, for
any service's own models: units of work, repositories whose reads carry an
explicit load plan, typed errors, and the tools to prove query shapes.
"""

from harbordb.config import Settings
from harbordb.db import Database, normalize_url
from harbordb.declarative import NAMING_CONVENTION, Timestamps, require_raise_loading
from harbordb.errors import (
    AfterCommitError,
    CheckViolation,
    CommitUncertain,
    ConfigurationError,
    Conflict,
    DatabaseError,
    ForeignKeyViolation,
    HarborError,
    IntegrityError,
    InvalidCursor,
    InvalidInput,
    LazyLoadDetected,
    NotFound,
    NPlusOneWarning,
    PermissionDenied,
    Retryable,
    Timeout,
    Unavailable,
    UnitOfWorkClosed,
)
from harbordb.guards import PoolerUnsafe
from harbordb.pagination import OffsetPage, Page
from harbordb.projection import Projection, related
from harbordb.querycount import QueryCounter, assert_max_queries, count_queries
from harbordb.replicas import InvalidReadToken, Replicas
from harbordb.repository import Repository, any_of, contains, escape_like
from harbordb.uow import UnitOfWork

__all__ = [
    "NAMING_CONVENTION",
    "AfterCommitError",
    "CheckViolation",
    "CommitUncertain",
    "ConfigurationError",
    "Conflict",
    "Database",
    "DatabaseError",
    "ForeignKeyViolation",
    "HarborError",
    "IntegrityError",
    "InvalidCursor",
    "InvalidInput",
    "InvalidReadToken",
    "LazyLoadDetected",
    "NPlusOneWarning",
    "NotFound",
    "OffsetPage",
    "Page",
    "PermissionDenied",
    "PoolerUnsafe",
    "Projection",
    "QueryCounter",
    "Replicas",
    "Repository",
    "Retryable",
    "Settings",
    "Timeout",
    "Timestamps",
    "Unavailable",
    "UnitOfWork",
    "UnitOfWorkClosed",
    "any_of",
    "assert_max_queries",
    "contains",
    "count_queries",
    "escape_like",
    "normalize_url",
    "related",
    "require_raise_loading",
]
