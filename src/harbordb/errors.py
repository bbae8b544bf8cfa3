"""The exceptions harbordb raises.

::

    HarborError
    ├── ConfigurationError     bad settings or URL (also a ValueError)
    │   ├── InvalidInput       an argument refused before any SQL (out of range, unstorable)
    │   └── PoolerUnsafe       session state a transaction pooler breaks (harbordb.guards)
    ├── NotFound               a row asked for by key does not exist
    ├── InvalidCursor          a pagination cursor was tampered with or garbled (also a ValueError)
    ├── InvalidReadToken       a read-your-writes token is no WAL position (harbordb.replicas)
    ├── LazyLoadDetected       the N+1 detector saw relationship loads per parent row
    ├── UnitOfWorkClosed       a unit of work was used after it ended (also a RuntimeError)
    ├── AfterCommitError       committed, but an after-commit callback raised
    ├── CommitUncertain        COMMIT was sent, then the connection or the task was lost:
    │                          the transaction may or may not have committed (never retried)
    └── DatabaseError          PostgreSQL refused a statement; `.sqlstate` tells why
        ├── IntegrityError
        │   ├── Conflict               23505 unique violation (`.constraint`)
        │   ├── ForeignKeyViolation    23503, and 23001 (ON DELETE RESTRICT)
        │   └── CheckViolation         23514
        ├── PermissionDenied       42501 missing privilege or row-level security refusal
        ├── Retryable              40001 serialization failure, 40P01 deadlock, a named
        │                          statement outdated by a schema change
        ├── Timeout                57014 statement timeout or cancel, 55P03 lock timeout
        └── Unavailable            08xxx, 53xxx, 57P0x, a lost or refused connection, no
                                   pooled connection free in time

    NPlusOneWarning (a UserWarning): what the N+1 detector emits in "warn" mode

A service defines its own refusals (out of stock, ...) as HarborError
subclasses beside its domain. `InvalidInput` (a `ConfigurationError`) is an
argument refused before any SQL: a number out of range, a string PostgreSQL
cannot store.

Database errors are translated from the SQLSTATE the server sent, never from
message text. Messages name the SQLSTATE, constraint, table and column but
never carry bound values, and neither does what is chained: the driver's
exception (whose DETAIL quotes the row, and whose encoding errors quote the
argument) is replaced by a `DriverError` summary holding only its class name
and those names, so ``logger.exception`` and ``traceback.format_exception`` are
safe to log. Set ``HARBORDB_CHAIN_DRIVER_ERRORS=1`` to chain the driver's own
exception instead (local debugging only: it carries the values). Wrap driver
calls in `translating()` to get harbordb errors out of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from asyncpg.exceptions import InvalidCachedStatementError, OutdatedSchemaCacheError
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# Opt-in (debugging only): chain the driver's exception, bound values and all.
CHAIN_DRIVER_ERRORS_ENV = "HARBORDB_CHAIN_DRIVER_ERRORS"


class HarborError(Exception):
    """Base class of every exception harbordb raises on purpose."""


class ConfigurationError(HarborError, ValueError):
    """Settings or a database URL are unusable."""


class InvalidInput(ConfigurationError):
    """An argument was refused before any SQL: out of PostgreSQL's range or not storable."""


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


class CommitUncertain(HarborError):
    """COMMIT was sent, then the connection was lost or the task was cancelled.

    The transaction may or may not have committed; nothing in harbordb can tell
    which, so `Database.run` never re-runs it. Make such writes idempotent (a
    unique request key: calling again finds the first write) and call again, or
    look the result up before deciding.
    """


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
    """The transaction lost a race (40001 serialization failure, 40P01 deadlock); re-run it.

    Also raised (SQLSTATE 0A000, or none) when a named prepared statement
    (``named_statements=True``) was outdated by a schema change: the server
    refused its changed result type, or asyncpg's cached type layout no longer
    matched. The caches are dropped by then, so a re-run prepares afresh.
    """


class Timeout(DatabaseError):
    """A statement or lock timeout fired, or the query was cancelled (57014, 55P03)."""


class Unavailable(DatabaseError):
    """The server or the connection went away, or none was free in time.

    08xxx (connection exceptions), 53xxx (insufficient resources, 53300 too
    many connections), 57P0x (shutdown, crash, cannot connect now), an OS or
    network error while connecting (a refused port, a missing socket file), a
    pool with no free connection within its wait. Temporary: retry later, in
    a new unit of work, unless `CommitUncertain` was raised instead.

    `waited` is True when a wait ran out (for a pooled connection, or the unit
    of work's timeout while connecting): `Database.run` re-runs other
    `Unavailable` errors raised before its function started, never these.
    """

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        constraint: str | None = None,
        waited: bool = False,
    ):
        super().__init__(message, sqlstate=sqlstate, constraint=constraint)
        self.waited = waited


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
}

# SQLSTATE class (first two characters, or a longer prefix) -> error, after exact codes.
_BY_PREFIX: tuple[tuple[str, type[DatabaseError]], ...] = (
    ("08", Unavailable),  # connection exception
    ("53", Unavailable),  # insufficient resources: too many connections, out of memory, disk full
    ("57P", Unavailable),  # operator intervention: shutdown, crash, cannot connect now
    ("23", IntegrityError),
)

# Driver exceptions (by class, as asyncpg tells them apart; the server sends the
# generic 0A000 feature_not_supported) for a cached statement outdated by a schema
# change: the transaction is lost, a re-run prepares afresh.
OUTDATED_STATEMENT = (InvalidCachedStatementError, OutdatedSchemaCacheError)
OUTDATED_STATEMENT_DESCRIPTION = "prepared statement outdated by a schema change, safe to retry"

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


def _is_lost_connection(exc: BaseException) -> bool:
    """SQLAlchemy marks disconnects; an OS or network error (a refused port, a reset,
    a missing Unix socket file, DNS) may also sit anywhere in the chain."""
    if getattr(exc, "connection_invalidated", False):
        return True
    return any(isinstance(link, OSError | DisconnectionError) for link in _chain(exc))


class DriverError(Exception):
    """What harbordb chains in place of the driver's exception: its class and names only.

    The driver's own message may quote bound values (a DETAIL such as
    ``Key (email)=(...)``, an argument that failed to encode); this summary keeps
    the class name, SQLSTATE, constraint, schema, table, column and data type name.
    """

    def __init__(self, original: BaseException) -> None:
        self.driver_class = f"{type(original).__module__}.{type(original).__qualname__}"
        self.names: dict[str, str] = {}
        for attr in ("sqlstate", "constraint_name", "schema_name", "table_name", "column_name",
                     "data_type_name"):  # fmt: skip
            value = getattr(original, attr, None)
            if isinstance(value, str) and value:
                self.names[attr] = value
        fields = ", ".join(f"{key}={value}" for key, value in self.names.items())
        super().__init__(f"{self.driver_class}" + (f" ({fields})" if fields else ""))


def _chain_driver_errors() -> bool:
    return os.environ.get(CHAIN_DRIVER_ERRORS_ENV, "").lower() in {"1", "true", "yes"}


def _cause(exc: BaseException) -> BaseException:
    """What a translated error chains: a `DriverError` summary, or `exc` when opted in."""
    if _chain_driver_errors():
        return exc
    links = list(_chain(exc))
    return DriverError(_driver_error(exc) or links[-1])


def translate(exc: BaseException) -> DatabaseError | None:
    """The harbordb error for a driver or SQLAlchemy exception, or None if it is not one.

    The result's ``__cause__`` is set (see `DriverError`): raise it with a plain
    ``raise error``, never ``raise error from exc``.
    """
    error = _translate(exc)
    if error is not None:
        error.__cause__ = _cause(exc)
        error.__suppress_context__ = True  # the original may become __context__ when raised
    return error


def _translate(exc: BaseException) -> DatabaseError | None:
    if isinstance(exc, HarborError):
        return None
    if isinstance(exc, PoolTimeoutError) and not isinstance(exc, DBAPIError):
        # SQLAlchemy's pool waited its pool_timeout; its message holds only numbers.
        return Unavailable(
            f"no pooled database connection free in time ({exc.args[0]})", waited=True
        )
    outdated = next((link for link in _chain(exc) if isinstance(link, OUTDATED_STATEMENT)), None)
    if outdated is not None:
        code = getattr(outdated, "sqlstate", None)
        where = f"SQLSTATE {code}" if code else type(outdated).__name__
        return Retryable(f"{OUTDATED_STATEMENT_DESCRIPTION} ({where})", sqlstate=code)
    driver = _driver_error(exc)
    if driver is None:
        if _is_lost_connection(exc):
            innermost = list(_chain(exc))[-1]
            return Unavailable(
                f"database connection unavailable (connection lost or refused: "
                f"{type(innermost).__name__})",
                # connect_timeout ran out (asyncio's TimeoutError wraps a cancellation)
                waited=any(isinstance(link, TimeoutError) for link in _chain(exc)),
            )
        if isinstance(exc, DBAPIError):
            # A driver-side failure without a SQLSTATE: name its class, not its
            # message, which may quote a parameter that failed to encode.
            innermost = list(_chain(exc))[-1]
            return DatabaseError(f"database error ({type(innermost).__name__})")
        return None
    sqlstate: str = driver.sqlstate  # type: ignore[attr-defined]
    cls = _BY_SQLSTATE.get(sqlstate)
    if cls is None:
        cls = next((c for prefix, c in _BY_PREFIX if sqlstate.startswith(prefix)), DatabaseError)
    constraint = getattr(driver, "constraint_name", None)
    message = f"{_DESCRIPTIONS[cls]} (SQLSTATE {sqlstate}"
    if constraint:
        message += f", constraint {constraint}"
    for label, attr in (("table", "table_name"), ("column", "column_name")):
        name = getattr(driver, attr, None)
        if name:
            message += f", {label} {name}"
    message += ")"
    return cls(message, sqlstate=sqlstate, constraint=constraint)


def is_driver_error(exc: BaseException) -> bool:
    """Whether `exc` is a failure of the database or of reaching it (`translate` maps it)."""
    return _translate(exc) is not None


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
    else:
        return
    # Raised outside the ``except`` block, so that the driver's exception is not
    # kept as ``__context__`` either.
    raise error
