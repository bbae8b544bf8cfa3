"""The exceptions harbordb raises.

::

    HarborError
    ├── ConfigurationError     bad settings or URL (also a ValueError)
    ├── NotFound               a row asked for by key does not exist
    ├── InvalidCursor          a pagination cursor was tampered with or garbled (also a ValueError)
    ├── LazyLoadDetected       the N+1 detector saw relationship loads per parent row
    ├── UnitOfWorkClosed       a unit of work was used after it ended (also a RuntimeError)
    ├── AfterCommitError       committed, but an after-commit callback raised
    └── DatabaseError          PostgreSQL refused a statement; `.sqlstate` tells why
        ├── IntegrityError
        │   ├── Conflict               23505 unique violation (`.constraint`)
        │   ├── ForeignKeyViolation    23503, and 23001 (ON DELETE RESTRICT)
        │   └── CheckViolation         23514
        ├── PermissionDenied       42501 missing privilege or row-level security refusal
        ├── Retryable              40001 serialization failure, 40P01 deadlock
        ├── Timeout                57014 statement timeout or cancel, 55P03 lock timeout
        └── Unavailable            08xxx, 57P01-57P03, a lost or refused connection

    NPlusOneWarning (a UserWarning): what the N+1 detector emits in "warn" mode

The inventory's refusals (`InsufficientStock`, `ReservationExpired`,
`CheckoutFailed`) are HarborErrors defined with their domain in
`harbor_commerce.inventory`.

Database errors are translated from the SQLSTATE the server sent, never from
message text. The driver's exception is chained as ``__cause__``. Messages
name the constraint and the SQLSTATE but never carry bound parameter values.
Wrap driver calls in `translating()` to get harbordb errors out of them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError


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


class UnitOfWorkClosed(HarborError, RuntimeError):
    """A unit of work was used after its commit or its end: open a new one."""


class AfterCommitError(HarborError):
    """The transaction committed, but after-commit callbacks raised.

    Every callback ran; `.errors` holds what each failing one raised, the first
    is chained as ``__cause__``. The data is committed: do not retry the work.
    """

    def __init__(self, message: str, errors: list[Exception]):
        super().__init__(message)
        self.errors = errors


class NPlusOneWarning(UserWarning):
    """The N+1 detector's warning in ``nplusone="warn"`` mode."""


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
    """A foreign key constraint was violated (23503, or 23001 from ON DELETE RESTRICT)."""


class CheckViolation(IntegrityError):
    """A CHECK constraint was violated (23514)."""


class PermissionDenied(DatabaseError):
    """The current role lacks a privilege, or a row-level security policy refused a row (42501)."""


class Retryable(DatabaseError):
    """The transaction lost a race (40001 serialization failure, 40P01 deadlock); re-run it."""


class Timeout(DatabaseError):
    """A statement or lock timeout fired, or the query was cancelled (57014, 55P03)."""


class Unavailable(DatabaseError):
    """The server or the connection went away (08xxx, 57P01-57P03)."""


_BY_SQLSTATE: dict[str, type[DatabaseError]] = {
    "23505": Conflict,
    "23503": ForeignKeyViolation,
    "23001": ForeignKeyViolation,  # restrict_violation: a RESTRICT foreign key refused a delete
    "23514": CheckViolation,
    "42501": PermissionDenied,
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
    PermissionDenied: "permission denied",
    Retryable: "transaction conflict, safe to retry",
    Timeout: "statement timed out, lock timed out or statement cancelled",
    Unavailable: "database connection unavailable",
    IntegrityError: "integrity constraint violated",
    DatabaseError: "database error",
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps: SQLAlchemy's `.orig`, else ``__cause__``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def _driver_error(exc: BaseException) -> BaseException | None:
    """The innermost exception in the chain that carries a SQLSTATE (asyncpg's own)."""
    found = None
    for link in _chain(exc):
        if isinstance(getattr(link, "sqlstate", None), str):
            found = link
    return found


# Failures to reach the server: a refused or reset connection, a timeout, DNS.
# Connecting, the driver raises these unwrapped.
_NETWORK_ERRORS = (ConnectionError, TimeoutError, socket.gaierror, socket.herror)


def _is_lost_connection(exc: BaseException) -> bool:
    """SQLAlchemy marks disconnects; a network error may also sit anywhere in the chain."""
    if getattr(exc, "connection_invalidated", False):
        return True
    return any(isinstance(link, _NETWORK_ERRORS) for link in _chain(exc))


def translate(exc: BaseException) -> DatabaseError | None:
    """The harbordb error for a driver or SQLAlchemy exception, or None if it is not one."""
    driver = _driver_error(exc)
    if driver is None:
        if _is_lost_connection(exc):
            return Unavailable("database connection unavailable (connection lost)")
        if isinstance(exc, DBAPIError):
            # A driver-side failure without a SQLSTATE: name its class, not its
            # message, which may quote a parameter that failed to encode.
            innermost = list(_chain(exc))[-1]
            return DatabaseError(f"database error ({type(innermost).__name__})")
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


def is_driver_error(exc: BaseException) -> bool:
    """Whether `exc` is a database error from SQLAlchemy or the driver (not a bare OSError)."""
    if isinstance(exc, HarborError):
        return False
    return isinstance(exc, DBAPIError) or _driver_error(exc) is not None


@contextmanager
def translating() -> Iterator[None]:
    """Re-raise database errors of the code inside as harbordb errors, chained.

    Wrap database calls only (``with translating(): await session.flush()``):
    a network error inside, such as a refused connection, becomes `Unavailable`.
    Anything else (harbordb errors, bugs, cancellation) passes through untouched.
    """
    try:
        yield
    except HarborError:
        raise
    except Exception as exc:
        error = translate(exc)
        if error is None:
            raise
        raise error from exc
