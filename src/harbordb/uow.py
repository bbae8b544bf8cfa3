"""The unit of work: one session, one transaction, committed only on request.

    async with db.unit_of_work() as uow:
        order = await uow.repository(OrderRepository).get(order_id)
        ...
        uow.after_commit(lambda: cache.forget(order_id))
        await uow.commit()

A service subclasses `UnitOfWork` to name its repositories, and passes the
class to `Database(unit_of_work=...)`:

    class BlogWork(UnitOfWork):
        @property
        def authors(self) -> AuthorRepository:
            return self.repository(AuthorRepository)

Leaving the block without `commit()` rolls back, and so does an exception or
a cancellation. After `commit()` the unit of work is finished: touching it
again raises `UnitOfWorkClosed`. Database errors leave it as harbordb errors
(`harbordb.errors`), the driver's exception chained.

After the block its objects are detached: what a read loaded stays readable
(render after the block), what it did not load raises at once. A block that
wrote (`harbordb.writetracking` says what counts) or holds unflushed changes,
and did not commit, expires every object it loaded: any may show uncommitted
data (a new row in a collection, a trigger's value), so after the block each
raises `DetachedInstanceError`. Every other block (every ``read_only=True``
one) detaches them all at once, at no per-object cost (`harbordb.detaching`).

A unit of work built by `Database` checks its connection out when the block
starts (an unreachable server fails at ``async with``) and opens its session
on it when the block first takes ``uow.session`` or a repository
(`harbordb.checkout`). READ ONLY and the isolation level travel with BEGIN,
which SQLAlchemy sends with the first statement; the other settings go in one
``set_config`` statement when the block starts (`harbordb.transaction`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Self, TypedDict, TypeVar, get_args

import anyio
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from harbordb import checkout, greenlets
from harbordb.aftercommit import AfterCommitCallback as AfterCommitCallback
from harbordb.aftercommit import run_callbacks
from harbordb.detaching import detach_all
from harbordb.driver import _HELD, connection_lost
from harbordb.errors import (
    CommitUncertain,
    ConfigurationError,
    DatabaseError,
    Unavailable,
    UnitOfWorkClosed,
    is_driver_error,
    translate,
    translating,
)
from harbordb.nplusone import NPlusOneDetector, NPlusOneMode
from harbordb.pool import ConnectionGate
from harbordb.repository import Repository
from harbordb.transaction import (
    Duration,
    milliseconds,
    role_error,
    send_settings,
    transaction_settings,
    within_deadline,
)
from harbordb.writetracking import has_written, start_tracking, stop_tracking, track_writes

IsolationLevel = Literal["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]

# Seconds a rollback and close may take once the unit of work is being cancelled.
CLEANUP_TIMEOUT = 10.0

# The setting row-level security policies read the claims from, unless the
# service names another (`Database(claims_setting=...)`): PostgREST's name.
CLAIMS_SETTING = "request.jwt.claims"

_NO_ROLES: Mapping[str, str] = MappingProxyType({})

# The session's `info` key naming its unit of work (read by harbordb.observability).
UNIT_OF_WORK_KEY = "harbordb.unit_of_work"

RepoT = TypeVar("RepoT", bound=Repository[Any])


class UnitOfWorkOptions(TypedDict, total=False):
    """The options `Database.run` passes on to `Database.unit_of_work`."""

    read_only: bool
    statement_timeout: Duration | None
    lock_timeout: Duration | None
    isolation_level: IsolationLevel | None
    claims: Mapping[str, Any] | None
    role: str | None
    nplusone: NPlusOneMode | Literal["off"] | None
    timeout: Duration | None
    after: str | None  # a read-your-writes token (harbordb.replicas)


class UnitOfWork:
    """One `AsyncSession` and one transaction; use as an async context manager.

    Build it with `Database.unit_of_work`, which passes the service's `roles`
    (public name -> database role: the only roles a unit of work may assume)
    and `claims_setting`. Given an `AsyncEngine` (as `Database` passes), it
    checks out its own connection when the block starts and opens its session
    on that connection when the block first uses it (`harbordb.checkout`);
    given a session, it drives that session, and closes it at the end. All
    options are checked here, before any SQL is sent. Subclasses add
    repository properties with `repository`.
    """

    def __init__(
        self,
        session: AsyncSession | AsyncEngine,
        *,
        read_only: bool = False,
        statement_timeout: Duration | None = None,
        lock_timeout: Duration | None = None,
        isolation_level: IsolationLevel | None = None,
        claims: Mapping[str, Any] | None = None,
        role: str | None = None,
        nplusone: NPlusOneMode | None = None,
        roles: Mapping[str, str] = _NO_ROLES,
        claims_setting: str = CLAIMS_SETTING,
        timeout: Duration | None = None,
        gate: ConnectionGate | None = None,
    ) -> None:
        if isolation_level is not None and isolation_level not in get_args(IsolationLevel):
            raise ConfigurationError(
                f"isolation_level must be one of {', '.join(get_args(IsolationLevel))}"
            )
        self._engine: AsyncEngine | None = None
        self._session: AsyncSession | None = None
        if isinstance(session, AsyncEngine):
            self._engine = session
        else:
            self._session = session
            session.info[UNIT_OF_WORK_KEY] = self  # for harbordb.observability
        # The connection the unit of work checked out itself (given an engine).
        self._connection: Connection | None = None
        self._options: dict[str, Any] | None = None  # its execution options, once taken
        self._isolation_level = isolation_level
        self._settings = transaction_settings(
            read_only=read_only,
            statement_timeout=statement_timeout,
            lock_timeout=lock_timeout,
            claims=claims,
            role=role,
            roles=roles,
            claims_setting=claims_setting,
        )
        self._role = role
        self._read_only = read_only
        self._timeout = None if timeout is None else milliseconds("timeout", timeout) / 1000
        self._gate = gate
        self._holds_slot = False
        self._detector = NPlusOneDetector(nplusone) if nplusone is not None else None
        self._state: Literal["new", "open", "committed", "closed"] = "new"
        self._callbacks: list[AfterCommitCallback] = []
        self._repositories: dict[type[Any], Any] = {}
        self._connection_info: dict[Any, Any] | None = None  # tracks writes (`_finish`)

    # -- lifecycle -------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise UnitOfWorkClosed("a unit of work can be entered only once")
        self._state = "open"
        if self._detector is not None and self._session is not None:
            self._detector.attach(self._session.sync_session)
        deadline = math.inf if self._timeout is None else anyio.current_time() + self._timeout
        try:
            if self._gate is not None:
                await self._gate.acquire(deadline)
                self._holds_slot = True
            await self._begin(deadline)
        except DatabaseError as exc:
            await self._finish()
            refused = role_error(exc, self._role, self._settings.get("role"))
            if refused is None:
                raise
            raise refused from exc
        except BaseException:
            await self._finish()
            raise
        return self

    async def _begin(self, deadline: float) -> None:
        """Connect and apply the settings now, so that an unreachable server fails at
        `async with`; within `deadline`, which also caps the statement timeout.

        READ ONLY and the isolation level go with BEGIN (which SQLAlchemy sends
        with the first statement), the other settings in one statement now. A
        unit of work joined to an open transaction sets READ ONLY in that
        statement too: its transaction has begun.
        """
        settings = within_deadline(self._settings, deadline)
        session = self._session
        if session is None:  # given an engine: the unit of work checks out its connection
            assert self._engine is not None
            engine = self._engine.sync_engine
            joined = False
        else:
            bind = session.sync_session.get_bind()
            engine = bind if isinstance(bind, Engine) else bind.engine
            joined = bind is not engine
        track_writes(engine)
        options: dict[str, Any] = {}
        if self._isolation_level:
            options["isolation_level"] = self._isolation_level
        if not joined and "transaction_read_only" in settings:
            del settings["transaction_read_only"]
            options["postgresql_readonly"] = True  # BEGIN READ ONLY
        if settings and session is None:
            assert self._engine is not None
            self._open_session(self._engine)  # the settings statement goes through it
        if deadline == math.inf:
            with translating():
                info = await self._connect(options or None, settings, joined)
        else:
            with anyio.move_on_after(deadline - anyio.current_time()) as scope, translating():
                info = await self._connect(options or None, settings, joined)
            if scope.cancelled_caught:
                raise Unavailable(
                    f"the unit of work's timeout ({self._timeout:.3g} s) passed while "
                    "connecting to the database (or waiting for the pooler to hand out a "
                    "server connection)",
                    waited=True,
                )
        self._connection_info = info
        start_tracking(info)  # the settings above are no write

    async def _connect(
        self, options: dict[str, Any] | None, settings: Mapping[str, str], joined: bool
    ) -> dict[Any, Any]:
        """Check out the connection, then send the settings, if any, in one statement
        (`harbordb.transaction.send_settings`); the connection's ``info``.

        Without a session (given an engine, no settings), the unit of work checks
        the connection out itself (`harbordb.checkout`).
        """
        session = self._session
        if session is None:
            assert self._engine is not None
            own: Connection = await greenlets.call(self._engine.sync_engine.connect)
            self._connection = own
            self._options = options  # set when the session opens (`checkout.set_options`)
            return own.info
        connection = await session.connection(execution_options=options)
        if settings:
            await send_settings(session, connection, settings, joined)
        return connection.info

    def _open_session(self, bind: AsyncEngine | AsyncConnection) -> AsyncSession:
        session = AsyncSession(bind, expire_on_commit=False)
        session.info[UNIT_OF_WORK_KEY] = self
        if self._detector is not None:
            self._detector.attach(session.sync_session)
        self._session = session
        return session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._finish()
        except Exception:
            if exc is None:
                raise
            # The body's error explains the failure better than the cleanup's.
        if exc is not None and is_driver_error(exc):
            error = translate(exc)
            if error is not None:
                raise error  # chained to a summary of `exc` (errors.DriverError)

    async def _finish(self) -> None:
        """Roll back unless committed, close the session, end the unit of work.

        The loaded objects are detached. When nothing was written (`_wrote`) or
        the unit of work committed, all at once (`harbordb.detaching`): they keep
        the committed values they were read with, at no per-object cost, and the
        close rolls the connection back. When something was written and not
        committed, the ORM rollback expires them all first: none can show an
        uncommitted value as if it were committed.

        Shielded from cancellation for up to `CLEANUP_TIMEOUT` seconds: an anyio
        cancel scope cancels every await until it exits, which would cut the
        rollback short and leave the server running the cancelled statement with
        its transaction open. If cleanup overruns, the connection is discarded.
        A unit of work whose own connection has no transaction open (it sent
        nothing, or committed) and goes back to the pool without a word to the
        server (`checkout.sends_nothing_back`) has nothing to shield.
        """
        rollback = self._state == "open"
        if rollback:
            self._state = "closed"
        session, connection = self._session, self._connection
        if (
            session is not None
            and connection is not None
            and checkout.untouched(session.sync_session)
        ):
            session = None  # taken, never used: nothing to expire, detach or close
        expire = rollback and session is not None and self._wrote()
        if connection is not None and not expire and checkout.sends_nothing_back(connection):
            try:
                self._stop_watching()
                if session is not None:
                    detach_all(session.sync_session)
                with translating():
                    await self._close(session, connection)
            finally:
                self._release_slot()
            return
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + CLEANUP_TIMEOUT):
            try:
                if expire and session is not None:
                    with translating():
                        await session.rollback()
            finally:
                self._stop_watching()
                try:
                    if session is not None and not expire:
                        detach_all(session.sync_session)
                    with translating():
                        await self._close(session, connection)
                finally:
                    self._release_slot()

    async def _close(self, session: AsyncSession | None, connection: Connection | None) -> None:
        """Close the session and return the unit of work's own connection, in one switch."""
        if connection is None:
            if session is not None:
                await session.close()
            return
        self._connection = None
        sync_session = None if session is None else session.sync_session
        await greenlets.call(checkout.close, sync_session, connection)

    def _stop_watching(self) -> None:
        if self._connection_info is not None:
            stop_tracking(self._connection_info)
        if self._detector is not None:
            self._detector.detach()
        if self._session is not None:
            # No reference cycle through the session's info: the unit of work, its
            # session and connection are freed at once, not by the garbage collector
            # (the connection found for driver reads holds the session's transaction,
            # which holds the session).
            self._session.info.pop(UNIT_OF_WORK_KEY, None)
            self._session.info.pop(_HELD, None)

    def _wrote(self) -> bool:
        """Whether this unit of work has written, or holds changes not yet flushed.

        Writes are the statements `harbordb.writetracking` names (INSERT,
        UPDATE, DELETE, DDL, data-modifying CTEs, textual SQL), flushes
        included; a READ ONLY transaction has none (PostgreSQL refuses them).
        True when it cannot tell (the block did not start).
        """
        session = self._session
        if session is None:  # never opened: nothing was sent on the unit of work's connection
            return False
        if session.new or session.dirty or session.deleted:
            return True
        if self._connection_info is not None and self._read_only:
            return False
        return has_written(self._connection_info)

    def _release_slot(self) -> None:
        if self._holds_slot and self._gate is not None:
            self._holds_slot = False
            self._gate.release()

    async def commit(self) -> None:
        """Commit, then run the after-commit callbacks; the unit of work is then finished.

        Pending changes are flushed first: if that fails, nothing is committed.
        If the connection is lost or the task cancelled once COMMIT is on its
        way, the outcome is unknown: `CommitUncertain` (never retried by
        `Database.run`; see `harbordb.errors`). Any other failure of the commit
        means nothing was committed, and no callback runs. If callbacks raise,
        the rest still run and `AfterCommitError` is raised after them: the data
        is committed all the same, so never retry then.
        """
        session = self.session
        self._state = "committed"  # from here on, the unit of work is unusable
        try:
            with translating():
                await session.flush()
            if await connection_lost(session):  # nothing sent: nothing committed
                raise Unavailable("database connection lost before COMMIT: nothing committed")
        except BaseException:
            self._state = "closed"  # closing the session at the block's end rolls back
            raise
        try:
            with translating():
                await session.commit()
        except Unavailable as exc:
            self._state = "closed"
            raise CommitUncertain(
                "the connection was lost while committing: the transaction may or may not "
                f"have committed ({exc})"
            ) from exc
        except anyio.get_cancelled_exc_class() as exc:
            self._state = "closed"
            raise CommitUncertain(
                "cancelled while committing: the transaction may or may not have committed"
            ) from exc
        except BaseException:
            self._state = "closed"
            raise
        callbacks, self._callbacks = self._callbacks, []
        await run_callbacks(callbacks)

    @property
    def committed(self) -> bool:
        return self._state == "committed"

    # -- inside the transaction -------------------------------------------

    @property
    def session(self) -> AsyncSession:
        """The session; raises `UnitOfWorkClosed` outside the ``async with`` block.

        A unit of work that checked out its own connection opens the session on it
        here, the first time.
        """
        self._require_open()
        session = self._session
        if session is None:
            assert self._engine is not None
            assert self._connection is not None
            if self._options:
                checkout.set_options(self._connection, self._options)
            session = self._open_session(AsyncConnection(self._engine, self._connection))
        return session

    def _bare_connection(self) -> Connection | None:
        """The connection it checked out, when a read may use it without the session
        (`harbordb.driver.own_connection`): open, the session not opened, no execution
        options to set when it opens (an isolation level set then would roll back
        what a read had begun)."""
        if self._state != "open" or self._session is not None or self._options:
            return None
        return self._connection

    def _require_open(self) -> None:
        if self._state != "open":
            raise UnitOfWorkClosed(_closed_message(self._state))

    async def flush(self) -> None:
        """Send pending changes now (to see constraint errors or generated keys early)."""
        with translating():
            await self.session.flush()

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction: released at the end, rolled back to on an exception.

        After-commit callbacks registered inside a savepoint that rolls back are
        dropped with its changes.
        """
        session = self.session
        callbacks = len(self._callbacks)
        try:
            with translating():
                async with session.begin_nested():
                    yield
        except Exception:
            del self._callbacks[callbacks:]
            raise

    def after_commit(self, callback: AfterCommitCallback) -> None:
        """Run ``callback()`` (sync, or async and awaited) after a successful commit only.

        Callbacks run in registration order inside `commit()`; see there for errors.
        """
        self._require_open()
        self._callbacks.append(callback)

    # -- repositories -----------------------------------------------------

    def repository(self, cls: type[RepoT]) -> RepoT:
        """The unit of work's instance of repository `cls` (one per class, on its session).

        Raises `UnitOfWorkClosed` outside the ``async with`` block.
        """
        session = self.session
        repository = self._repositories.get(cls)
        if repository is None:
            repository = self._repositories[cls] = cls(session)
        return repository

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._state}>"


def _closed_message(state: str) -> str:
    if state == "new":
        return "the unit of work has not started: use it as `async with db.unit_of_work() as uow`"
    if state == "committed":
        return "the unit of work was committed and is finished: open a new one"
    return "the unit of work has ended (rolled back): open a new one"
