"""Named prepared statements (``named_statements=True``): keeping the caches honest.

A named statement keeps the parameter and result types it was prepared with.
PostgreSQL refuses one whose result type a schema change altered (asyncpg's
``InvalidCachedStatementError``, raised as `Retryable`; SQLAlchemy and
`harbordb.driver` then mark every connection's caches stale), but
not one whose parameter types went stale. After ``ALTER COLUMN id TYPE
bigint`` a statement prepared with an int4 parameter goes on encoding int4:
measured here, a key above 2**31 failed (22000) on every call until the
connection was recycled, where an unnamed statement, re-prepared, read the
row. So the errors such staleness causes mark the engine's caches stale too
(SQLAlchemy's dialect-wide ``_invalidate_schema_cache``): that call fails, and
the next statement on any connection is prepared afresh.

Those errors: asyncpg's own ``DataError`` of an argument it could not encode
(the exact class, raised by the client, not one of the server's 22xxx
subclasses), 42883 (no operator for the new type) and 42804 (datatype
mismatch). A service whose code keeps raising one of them loses the caches'
benefit, never correctness. The default engine (caches off) is left alone.
"""

from __future__ import annotations

from typing import Any

from asyncpg.exceptions import DataError, DatatypeMismatchError, UndefinedFunctionError
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext

_STALE_PARAMETERS = (UndefinedFunctionError, DatatypeMismatchError)


def stale_parameters(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) may come from a statement's stale parameter types."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if type(link) is DataError or isinstance(link, _STALE_PARAMETERS):
            return True
        orig = getattr(link, "orig", None)
        link = orig if isinstance(orig, BaseException) else link.__cause__
    return False


def named(engine: Engine) -> bool:
    """Whether `engine` caches named statements (harbordb's ``named_statements=True``)."""
    return engine.url.query.get("prepared_statement_cache_size", "0") != "0"


def after_error(dialect: Any, exc: BaseException) -> None:
    """Mark every connection's caches stale if `exc` may come from stale parameters."""
    if stale_parameters(exc):
        dialect._invalidate_schema_cache()


def _on_error(context: ExceptionContext) -> None:
    after_error(context.dialect, context.original_exception)


def watch(engine: Engine) -> None:
    """Install `after_error` for the statements SQLAlchemy runs on a named engine."""
    event.listen(engine, "handle_error", _on_error)
