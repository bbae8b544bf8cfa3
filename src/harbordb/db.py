"""URL normalisation, the engine factory and `Database`.

Every engine harbordb builds is safe behind a transaction pooler: asyncpg's
statement cache and SQLAlchemy's prepared-statement cache are both off, and no
server setting that PgBouncer rejects at connect time is sent. The one
exception is opt-in: ``named_statements=True`` turns both caches on
(`STATEMENT_CACHE_SIZE` named statements each per connection), refused behind
a pooler not stated to track them (`harbordb.config.check_named_statements`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import fields
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, Unpack, overload

from sqlalchemy import URL, event, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool
from sqlalchemy.util import await_
from typing_extensions import TypeVar as DefaultTypeVar

from harbordb import guards, statements
from harbordb.config import Pooler, Settings, check_pooler
from harbordb.errors import ConfigurationError
from harbordb.nplusone import NPlusOneMode
from harbordb.pool import ConnectionGate
from harbordb.replicas import Replicas, parse_token
from harbordb.retry import run_with_retries
from harbordb.transaction import Duration
from harbordb.uow import IsolationLevel, UnitOfWork, UnitOfWorkOptions

T = TypeVar("T")
UoWT = DefaultTypeVar("UoWT", bound=UnitOfWork, default=UnitOfWork)

_SCHEMES = {"postgres", "postgresql", "postgresql+asyncpg"}
# Per connection, with named_statements=True: asyncpg's cache (the projections'
# reads) and SQLAlchemy's (every ORM and Core statement). Both are needed: with
# SQLAlchemy's alone the statements are unnamed (unsafe after a schema change,
# ARCHITECTURE.md); with asyncpg's alone, SQLAlchemy prepares a new named
# statement per call (three round trips).
STATEMENT_CACHE_SIZE = 100

_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


def normalize_url(url: str | URL) -> URL:
    """Parse a PostgreSQL URL and point it at asyncpg.

    Accepts ``postgres://``, ``postgresql://`` and ``postgresql+asyncpg://``;
    translates libpq's ``sslmode`` to asyncpg's ``ssl``. Errors never echo the
    URL, since it may carry a password.
    """
    if isinstance(url, str):
        if not url.strip():
            raise ConfigurationError("database URL is empty")
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            raise ConfigurationError(
                "database URL is malformed: expected postgresql://user:password@host:port/dbname"
            ) from None
    else:
        parsed = url
    if parsed.drivername not in _SCHEMES:
        raise ConfigurationError(
            f"database URL scheme {parsed.drivername!r} is not supported: harbordb speaks to "
            "PostgreSQL through asyncpg (use postgresql:// or postgresql+asyncpg://)"
        )
    if not parsed.database:
        raise ConfigurationError("database URL names no database (expected .../dbname)")
    query = dict(parsed.query)
    if "sslmode" in query:
        mode = query.pop("sslmode")
        if mode not in _SSLMODES:
            raise ConfigurationError(
                f"sslmode {mode!r} is not one of {', '.join(sorted(_SSLMODES))}"
            )
        query["ssl"] = mode
    # SQLAlchemy's own cache of prepared statements: off, so that a transaction
    # pooler never routes a cached statement name to a server that lacks it.
    query["prepared_statement_cache_size"] = "0"
    return parsed.set(drivername="postgresql+asyncpg", query=query)


def asyncpg_dsn(url: str) -> str:
    """A DSN for `asyncpg.connect`: the normalised URL without SQLAlchemy's options."""
    parsed = normalize_url(url).set(drivername="postgresql")
    parsed = parsed.difference_update_query(["prepared_statement_cache_size"])
    return parsed.render_as_string(hide_password=False)


def safe_url(url: URL) -> str:
    """The URL with its password masked, for logs and reprs."""
    return url.render_as_string(hide_password=True)


def create_engine(settings: Settings) -> AsyncEngine:
    """An `AsyncEngine` configured for `settings.pooler`."""
    if not settings.database_url:
        raise ConfigurationError(
            "no database URL: pass one to Database() or set HARBORDB_DATABASE_URL (or DATABASE_URL)"
        )
    url = normalize_url(settings.database_url)
    cache_size = STATEMENT_CACHE_SIZE if settings.named_statements else 0
    if cache_size:
        url = url.update_query_dict({"prepared_statement_cache_size": str(cache_size)})
    options: dict[str, Any] = {
        # Bound values (which may be secrets) stay out of error messages and logs.
        "hide_parameters": True,
        "connect_args": {
            # asyncpg's own statement cache: off (named prepared statements break
            # behind a transaction pooler) unless named_statements. Timeouts are set
            # per transaction with SET LOCAL, never as startup parameters, which
            # PgBouncer refuses.
            "statement_cache_size": cache_size,
            "server_settings": {"application_name": settings.application_name},
            # Bounds the connect and the login (asyncpg's default is 60 s).
            "timeout": settings.connect_timeout,
        },
    }
    if settings.pooler == "external":
        engine = _engine_behind_pooler(url, options)
    else:
        engine = create_async_engine(
            url,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_recycle=settings.pool_recycle,
            pool_timeout=settings.pool_timeout,
            **options,
        )
        _listen_for_pings(engine, settings)
    if cache_size:
        statements.watch(engine.sync_engine)
    return engine


def _engine_behind_pooler(url: URL, options: dict[str, Any]) -> AsyncEngine:
    """Behind a transaction pooler: no pool here (it would pin the pooler's server
    connections), and session state the pooler would break refused (`harbordb.guards`)."""
    guards.check_startup_options(dict(url.query))
    options["connect_args"]["connection_class"] = guards.GuardedConnection
    engine = create_async_engine(url, poolclass=NullPool, **options)
    event.listen(engine.sync_engine, "before_cursor_execute", guards.before_cursor_execute)
    return engine


def connection_gate(settings: Settings) -> ConnectionGate | None:
    """The FIFO admission in front of harbordb's own pool (`harbordb.pool`); none
    behind an external pooler, which queues clients itself."""
    if settings.pooler == "external":
        return None
    return ConnectionGate(
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        timeout=settings.pool_timeout,
    )


def _listen_for_pings(engine: AsyncEngine, settings: Settings) -> None:
    ping = _Ping(settings.pool_ping_after)
    event.listen(engine.sync_engine.pool, "checkin", ping.checkin)
    event.listen(engine.sync_engine.pool, "checkout", ping.checkout)


class _Ping:
    """Check pooled connections on checkout: harbordb's `pool_pre_ping`.

    SQLAlchemy's own pre-ping for asyncpg costs four round trips (BEGIN, a
    prepare and an execute of ";" with the statement cache off, ROLLBACK). A
    simple-protocol ``SELECT 1`` costs one and is as safe behind a transaction
    pooler (asyncpg 0.32 fails on the empty simple query ";"). A connection
    back in the pool for less than `after` seconds is taken to be alive and
    not pinged. A dead one raises `DisconnectionError`, on which the pool
    discards it and checks out another (up to three times).
    """

    _KEY = "harbordb.checked_in_at"

    def __init__(self, after: float) -> None:
        self.after = after

    def checkin(self, dbapi_connection: Any, record: Any) -> None:
        record.info[self._KEY] = time.monotonic()

    def checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checked_in_at = record.info.get(self._KEY)
        if checked_in_at is not None and time.monotonic() - checked_in_at < self.after:
            return
        try:
            await_(dbapi_connection.driver_connection.execute("SELECT 1"))
        except Exception as exc:
            raise DisconnectionError("pooled connection failed its ping") from exc


# The `Settings` fields `Database` takes as keyword options: all but those it
# takes as named arguments (url, pooler, roles, claims_setting, replicas).
_KEYWORD_SETTINGS = {field.name for field in fields(Settings)} - {
    "database_url",
    "pooler",
    "roles",
    "claims_setting",
    "replica_urls",
}


class Database(Generic[UoWT]):
    """Owns one engine and its session factory; use as an async context manager.

    >>> async with Database("postgresql://app@db/blog", unit_of_work=BlogWork) as db:
    ...     async with db.unit_of_work() as uow: ...   # a BlogWork

    - `unit_of_work`: the `UnitOfWork` subclass `unit_of_work()` and `run()`
      build (the base class by default); `Database` is generic in it.
    - `roles`: public role name -> database role, the only roles a unit of
      work may assume (``unit_of_work(role="reader")``). harbordb creates no
      roles: the service's migrations do.
    - `claims_setting`: the setting row-level security policies read the
      JSON claims from (default ``request.jwt.claims``).
    - `replicas`: read replicas' URLs: read-only units of work go to them, with
      read-your-writes tokens (`harbordb.replicas`; ``db.replicas``, None without).
    - `named_statements`: named prepared statements, one round trip per repeated
      statement (off by default; behind ``pooler="external"`` only with
      ``pooler_prepared_statements=True``).
    - `pooler`, and any other `Settings` field as a keyword (`application_name`,
      pool_*, replica_*, `nplusone`, `named_statements` ...): see `Settings`.

    Arguments win over the environment (`Settings.from_env`), read once here.
    """

    @overload
    def __init__(
        self: Database[UnitOfWork],
        url: str | None = None,
        *,
        unit_of_work: None = None,
        pooler: Pooler | None = None,
        roles: Mapping[str, str] | None = None,
        claims_setting: str | None = None,
        replicas: Sequence[str] | None = None,
        settings: Settings | None = None,
        environ: Mapping[str, str] | None = None,
        **pool_options: Any,
    ) -> None: ...

    @overload
    def __init__(
        self,
        url: str | None = None,
        *,
        unit_of_work: type[UoWT],
        pooler: Pooler | None = None,
        roles: Mapping[str, str] | None = None,
        claims_setting: str | None = None,
        replicas: Sequence[str] | None = None,
        settings: Settings | None = None,
        environ: Mapping[str, str] | None = None,
        **pool_options: Any,
    ) -> None: ...

    def __init__(
        self,
        url: str | None = None,
        *,
        unit_of_work: type[UoWT] | None = None,
        pooler: Pooler | None = None,
        roles: Mapping[str, str] | None = None,
        claims_setting: str | None = None,
        replicas: Sequence[str] | None = None,
        settings: Settings | None = None,
        environ: Mapping[str, str] | None = None,
        **pool_options: Any,
    ) -> None:
        if pooler is not None:
            check_pooler(pooler)
        cls = UnitOfWork if unit_of_work is None else unit_of_work
        if not (isinstance(cls, type) and issubclass(cls, UnitOfWork)):
            raise ConfigurationError(
                f"unit_of_work must be UnitOfWork or a subclass of it, got {cls!r}"
            )
        self._unit_of_work_class: type[UoWT] = cls  # type: ignore[assignment]
        base = settings or Settings.from_env(environ)
        overrides = {
            "database_url": url,
            "pooler": pooler,
            "roles": roles,
            "claims_setting": claims_setting,
            "replica_urls": None if replicas is None else tuple(replicas),
            **pool_options,
        }
        unknown = set(pool_options) - _KEYWORD_SETTINGS
        if unknown:
            raise ConfigurationError(f"unknown Database option(s): {', '.join(sorted(unknown))}")
        self.settings = Settings(
            **{**base.__dict__, **{k: v for k, v in overrides.items() if v is not None}}
        )
        self.engine: AsyncEngine = create_engine(self.settings)
        self._gate = connection_gate(self.settings)
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )
        # Read replicas (harbordb.replicas): None when none are configured.
        self.replicas: Replicas | None = None
        if self.settings.replica_urls:
            self.replicas = Replicas(self.settings, self.engine, create_engine)

    def session(self) -> AsyncSession:
        """A new `AsyncSession` (objects stay readable after commit)."""
        return self.sessionmaker()

    def unit_of_work(
        self,
        *,
        read_only: bool = False,
        statement_timeout: Duration | None = None,
        lock_timeout: Duration | None = None,
        isolation_level: IsolationLevel | None = None,
        claims: Mapping[str, Any] | None = None,
        role: str | None = None,
        nplusone: NPlusOneMode | Literal["off"] | None = None,
        connection: AsyncConnection | None = None,
        timeout: Duration | None = None,
        after: str | None = None,
    ) -> UoWT:
        """A unit of work (of the `unit_of_work` class): one session and one transaction,
        committed only on request.

        - `read_only`: the transaction is READ ONLY.
        - `statement_timeout`, `lock_timeout`: seconds or a timedelta, set LOCAL.
        - `isolation_level`: "READ COMMITTED" (the server default), "REPEATABLE
          READ" or "SERIALIZABLE".
        - `role`: a public name from `roles` (the database role is assumed with
          SET LOCAL ROLE), and `claims`: the JWT payload row-level security
          reads, as JSON in `claims_setting`.
        - `nplusone`: "raise", "warn" or "off"; None takes `Settings.nplusone`.
        - `connection`: join this connection's open transaction (tests): the unit of
          work runs in a SAVEPOINT, and its `commit()` releases the savepoint.
        - `timeout`: seconds (or a timedelta) for entering the block: waiting for
          a pooled connection, connecting (and a pooler's queue); each statement's
          timeout is then capped by what is left. Past it, `Unavailable` (waits)
          or `Timeout` (a statement). None: only `pool_timeout`, `connect_timeout`.
        - `after`: a read-your-writes token (``db.replicas.last_token()``): a
          read-only unit of work runs on a replica only once it has replayed that
          commit (`harbordb.replicas`). Without replicas, everything runs on the primary.

        Options are validated here, before any SQL is sent.
        """
        if nplusone is None:  # the service-wide default, HARBORDB_NPLUSONE
            nplusone = self.settings.nplusone
        if after is not None:
            parse_token(after)  # checked even when everything runs on the primary
        session: AsyncSession | AsyncEngine
        if connection is None:
            if self.replicas is None:
                session = self.engine  # the unit of work checks out its own connection
            else:
                session = self.replicas.session(read_only=read_only, after=after)
        elif isolation_level is not None:
            raise ConfigurationError(
                "isolation_level cannot be set for a unit of work joining an open transaction"
            )
        else:
            session = AsyncSession(
                bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
            )
        return self._unit_of_work_class(
            session,
            read_only=read_only,
            statement_timeout=statement_timeout,
            lock_timeout=lock_timeout,
            isolation_level=isolation_level,
            claims=claims,
            role=role,
            nplusone=None if nplusone == "off" else nplusone,
            roles=self.settings.roles,
            claims_setting=self.settings.claims_setting,
            timeout=timeout,
            gate=self._gate if connection is None else None,
        )

    async def run(
        self,
        fn: Callable[[UoWT], Awaitable[T]],
        /,
        *,
        retries: int = 3,
        **options: Unpack[UnitOfWorkOptions],
    ) -> T:
        """``await fn(uow)`` in a new unit of work, committed when `fn` returns.

        On `Retryable` (serialization failure, deadlock), and on `Unavailable`
        before `fn` started (nothing sent), the whole of `fn` runs again in a new
        unit of work, up to `retries` more times, after a jittered exponential
        backoff (`harbordb.retry`). Other errors propagate at once. `options` are
        those of `unit_of_work`.
        """

        def open_unit_of_work() -> UoWT:
            return self.unit_of_work(**options)

        if self.replicas is not None and options.get("read_only"):
            return await self.replicas.run(open_unit_of_work, fn, retries=retries)
        return await run_with_retries(open_unit_of_work, fn, retries=retries)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.replicas is not None:
            await self.replicas.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()

    def __repr__(self) -> str:
        named = ", named_statements=True" if self.settings.named_statements else ""
        return f"Database({safe_url(self.engine.url)!r}, pooler={self.settings.pooler!r}{named})"
