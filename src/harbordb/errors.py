"""The exceptions harbordb raises.

::

    HarborError
    ├── ConfigurationError     bad settings or URL (also a ValueError)
    ├── NotFound               a row asked for by key does not exist
    ├── InvalidCursor          a pagination cursor was tampered with or garbled (also a ValueError)
    ├── LazyLoadDetected       the N+1 detector saw relationship loads per parent row
    └── DatabaseError          PostgreSQL refused a statement; `.sqlstate` tells why
        ├── IntegrityError
        │   ├── Conflict               23505 unique violation (`.constraint`)
        │   ├── ForeignKeyViolation    23503
        │   └── CheckViolation         23514
        ├── Retryable              40001 serialization failure, 40P01 deadlock
        ├── Timeout                57014 statement or lock timeout, query cancelled
        └── Unavailable            08xxx, 57P01-57P03, a lost connection

Database errors are translated from the SQLSTATE the server sent, never from
message text. The driver's exception is chained as ``__cause__``. Messages
name the constraint and the SQLSTATE but never carry bound parameter values.
"""

from __future__ import annotations


class HarborError(Exception):
    """Base class of every exception harbordb raises on purpose."""


class ConfigurationError(HarborError, ValueError):
    """Settings or a database URL are unusable."""


class NotFound(HarborError):
    """A row requested by primary key (or another unique key) does not exist."""


class InvalidCursor(HarborError, ValueError):
    """A keyset pagination cursor could not be decoded or does not fit the query."""


class LazyLoadDetected(HarborError):
    """Relationships were loaded one parent row at a time (the N+1 pattern)."""


class DatabaseError(HarborError):
    """PostgreSQL rejected a statement."""

    def __init__(self, message: str, *, sqlstate: str | None = None, constraint: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.constraint = constraint


class IntegrityError(DatabaseError):
    """An integrity constraint was violated (SQLSTATE class 23)."""


class Conflict(IntegrityError):
    """A unique constraint was violated (23505)."""


class ForeignKeyViolation(IntegrityError):
    """A foreign key constraint was violated (23503)."""


class CheckViolation(IntegrityError):
    """A CHECK constraint was violated (23514)."""


class Retryable(DatabaseError):
    """The transaction lost a race (40001 serialization failure, 40P01 deadlock); re-run it."""


class Timeout(DatabaseError):
    """A statement or lock timeout fired, or the query was cancelled (57014, 55P03)."""


class Unavailable(DatabaseError):
    """The server or the connection went away (08xxx, 57P01-57P03)."""


_BY_SQLSTATE: dict[str, type[DatabaseError]] = {
    "23505": Conflict,
    "23503": ForeignKeyViolation,
    "23514": CheckViolation,
    "40001": Retryable,
    "40P01": Retryable,
    "57014": Timeout,
    "55P03": Timeout,
    "57P01": Unavailable,
    "57P02": Unavailable,
    "57P03": Unavailable,
}

_DESCRIPTIONS: dict[type[DatabaseError], str] = {
    Conflict: "unique constraint violated",
    ForeignKeyViolation: "foreign key constraint violated",
    CheckViolation: "check constraint violated",
    Retryable: "transaction conflict, safe to retry",
    Timeout: "statement timed out or was cancelled",
    Unavailable: "database connection unavailable",
    IntegrityError: "integrity constraint violated",
    DatabaseError: "database error",
}


def _driver_error(exc: BaseException) -> BaseException | None:
    """Walk `.orig` and `__cause__` down to the exception that carries a SQLSTATE."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(getattr(current, "sqlstate", None), str):
            return current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return None


def _is_lost_connection(exc: BaseException) -> bool:
    """SQLAlchemy marks disconnects; a socket error may also sit anywhere in the chain."""
    if getattr(exc, "connection_invalidated", False):
        return True
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


def translate(exc: BaseException) -> DatabaseError | None:
    """The harbordb error for a driver or SQLAlchemy exception, or None if it is not one."""
    driver = _driver_error(exc)
    if driver is None:
        if _is_lost_connection(exc):
            return Unavailable("database connection unavailable (connection lost)")
        return None
    sqlstate: str = driver.sqlstate  # type: ignore[attr-defined]
    cls = _BY_SQLSTATE.get(sqlstate)
    if cls is None:
        if sqlstate.startswith("08"):
            cls = Unavailable
        elif sqlstate.startswith("23"):
            cls = IntegrityError
        else:
            cls = DatabaseError
    constraint = getattr(driver, "constraint_name", None)
    message = f"{_DESCRIPTIONS[cls]} (SQLSTATE {sqlstate}"
    if constraint:
        message += f", constraint {constraint}"
    table = getattr(driver, "table_name", None)
    if table:
        message += f", table {table}"
    message += ")"
    return cls(message, sqlstate=sqlstate, constraint=constraint)
