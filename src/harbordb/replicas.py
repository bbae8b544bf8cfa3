"""Read replicas: read-only units of work on streaming standbys, with read-your-writes.

`Database(url, replicas=[...])` builds one engine per replica, with the same URL
rules, pool mode and pooler safety as the primary's. A unit of work opened with
``read_only=True`` goes to a replica; every other one goes to the primary.

Choosing a replica. Replicas are taken in round robin. Before a read runs on
one, a probe on the freshly checked-out connection (one round trip, outside the
transaction) reads ``pg_is_in_recovery()`` and ``pg_last_wal_replay_lsn()``. A
replica is skipped, and the next one (finally the primary) is tried, when:

- it cannot be reached, refuses, or its probe fails: it then rests for
  `Settings.replica_retry_after` seconds, and is probed again after that;
- it is not in recovery (a promoted or misnamed server);
- its lag exceeds `Settings.replica_max_lag`. Lag is measured against the
  primary's WAL positions: this `Database` notes the primary's position after
  each commit and samples its flush position at most twice a second while reading; a replica's
  lag is the age of the oldest noted position it has not replayed yet (0 when
  it has replayed all of them). No clocks are compared across servers.

Read-your-writes. After every commit of a read-write unit of work, the
primary's WAL flush position (which a synchronous COMMIT has passed; the insert
position after an asynchronous one) is read on the same connection, in the
round trip right after COMMIT (asyncpg cannot pipeline it with the COMMIT
itself). That position, as a short string such as ``"0/3016A28"``, is the commit's token:
``db.replicas.last_token()`` returns the token of the current task's last commit
on this `Database`, for a cookie or a header. A read opened with
``unit_of_work(read_only=True, after=token)`` runs on a replica only once that
replica has replayed the token's position, waiting at most
`Settings.replica_wait` seconds (polling), and otherwise on the primary. Without
``after``, a read waits for the latest commit made through this `Database` (by
any task): within one process, reads see the process's own writes.

Errors. No failure of a replica reaches the caller while routing: the read
falls back. A replica that dies in the middle of a unit of work fails that unit
of work with `Unavailable` (its statements cannot be replayed elsewhere behind
the caller's back; a COMMIT lost there is `CommitUncertain`);
`Database.run(fn, read_only=True)` re-runs `fn` then, on another replica or the
primary: a standby cannot have written anything.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.util import await_

from harbordb.errors import CommitUncertain, HarborError, Unavailable
from harbordb.retry import run_with_retries

if TYPE_CHECKING:
    from harbordb.config import Settings
    from harbordb.uow import UnitOfWork

T = TypeVar("T")
UoWT = TypeVar("UoWT", bound="UnitOfWork")

logger = logging.getLogger("harbordb.replicas")

# Seconds a replica's connect + probe may take before it counts as down.
PROBE_TIMEOUT = 2.0
# Seconds between samples of the primary's WAL position (the lag reference).
SAMPLE_EVERY = 0.5
# Seconds between two probes while a read waits for a token.
_POLL_MIN, _POLL_MAX = 0.002, 0.02

_TOKEN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")
_PROBE = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn(),"
    " current_setting('wal_block_size')::int"
)
# A standby can hold this much of one record it cannot replay yet (see `_lag`).
_PARTIAL_RECORD = 64 * 1024
# A commit's token: the flush position, which a synchronous COMMIT has passed (the insert
# position may hold WAL no one flushes on an idle primary: pruning, hint records), or the
# insert position after an asynchronous one; with the WAL page and segment sizes (`wal_end`).
_COMMIT_LSN = (
    "SELECT CASE current_setting('synchronous_commit') WHEN 'off'"
    " THEN pg_current_wal_insert_lsn() ELSE pg_current_wal_flush_lsn() END,"
    " current_setting('wal_block_size')::int,"
    " pg_size_bytes(current_setting('wal_segment_size'))::bigint"
)
# The lag reference: only flushed WAL can reach a standby.
_PRIMARY_LSN = "SELECT pg_current_wal_flush_lsn()"
# Page header sizes (XLogShortPHD, XLogLongPHD: the first page of a segment).
_SHORT_HEADER, _LONG_HEADER = 24, 40
_CONNECTION_KEY = "harbordb.replicas.connection"
_ROUTER_KEY = "harbordb.replicas.router"


class InvalidReadToken(HarborError, ValueError):
    """A read-your-writes token is not a WAL position such as ``"0/3016A28"``."""


def format_token(lsn: int) -> str:
    """A WAL position as PostgreSQL spells it (``"16/B374D848"``): the token string."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_token(token: str) -> int:
    """The WAL position a token names; `InvalidReadToken` if it names none."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise InvalidReadToken("a read token must be a WAL position such as '0/3016A28'")
    high, low = token.split("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass(frozen=True)
class ReplicaStatus:
    """What the router last saw of one replica (``Replicas.status()``)."""

    url: str  # password masked
    healthy: bool  # not resting after a failure
    lag: float | None  # seconds, as last measured (None: never probed)
    replayed: str | None  # the last replay position seen, as a token
    reads: int  # read-only units of work served


@dataclass(frozen=True)
class RoutingStatus:
    """Routing counts since the `Database` was built, and each replica's state."""

    primary: int  # units of work bound to the primary (writes and fallbacks)
    fallbacks: int  # read-only units of work that fell back to the primary
    waits: int  # reads that polled a replica for a token
    replicas: tuple[ReplicaStatus, ...]


class _Replica:
    def __init__(self, engine: AsyncEngine, url: str) -> None:
        self.engine = engine
        self.url = url
        self.resting_until = 0.0
        self.lag: float | None = None
        self.replayed: int | None = None
        self.reads = 0

    def status(self, now: float) -> ReplicaStatus:
        replayed = None if self.replayed is None else format_token(self.replayed)
        return ReplicaStatus(self.url, now >= self.resting_until, self.lag, replayed, self.reads)


class Replicas:
    """The read replicas of one `Database` (``db.replicas``) and the routing between them.

    Built by `Database` when replicas are configured; see the module docstring.
    """

    def __init__(
        self,
        settings: Settings,
        primary: AsyncEngine,
        create_engine: Callable[[Settings], AsyncEngine],
    ) -> None:
        from harbordb.db import safe_url  # db imports this module

        self.primary = primary
        self.max_lag = settings.replica_max_lag
        self.wait = settings.replica_wait
        self.retry_after = settings.replica_retry_after
        self._replicas = [
            _Replica(engine, safe_url(engine.url))
            for engine in (
                create_engine(replace(settings, database_url=url, replica_urls=()))
                for url in settings.replica_urls
            )
        ]
        self._turn = itertools.count()
        self._samples: deque[tuple[float, int]] = deque(maxlen=4096)
        self._sampling = False
        self._latest: int | None = None
        self._task_token: contextvars.ContextVar[int | None] = contextvars.ContextVar(
            "harbordb_read_token", default=None
        )
        self._last_target: contextvars.ContextVar[_Replica | None] = contextvars.ContextVar(
            "harbordb_read_target", default=None
        )
        self._primary_count = 0
        self._fallbacks = 0
        self._waits = 0

    # -- public -------------------------------------------------------------

    def last_token(self) -> str | None:
        """The token of the current task's last commit through this `Database`, if any."""
        lsn = self._task_token.get()
        return None if lsn is None else format_token(lsn)

    def latest_token(self) -> str | None:
        """The token of the latest commit through this `Database` by any task."""
        return None if self._latest is None else format_token(self._latest)

    def status(self) -> RoutingStatus:
        now = time.monotonic()
        return RoutingStatus(
            primary=self._primary_count,
            fallbacks=self._fallbacks,
            waits=self._waits,
            replicas=tuple(replica.status(now) for replica in self._replicas),
        )

    async def dispose(self) -> None:
        for replica in self._replicas:
            await replica.engine.dispose()

    # -- used by Database ------------------------------------------------------

    def session(self, *, read_only: bool, after: str | None) -> AsyncSession:
        """The session of a new unit of work; it picks its server when it first connects."""
        wanted = parse_token(after) if after is not None else self._latest
        return _RoutedSession(self, read_only=read_only, after=wanted)

    async def run(
        self,
        open_unit_of_work: Callable[[], UoWT],
        fn: Callable[[UoWT], Awaitable[T]],
        *,
        retries: int,
    ) -> T:
        """`run_with_retries` for read-only work, re-run when the replica it ran on died."""
        for attempt in itertools.count():
            self._last_target.set(None)
            try:
                return await run_with_retries(open_unit_of_work, fn, retries=retries)
            except (Unavailable, CommitUncertain):
                # A hot standby writes nothing: its lost COMMIT is safe to run again.
                replica = self._last_target.get()
                if replica is None or attempt >= len(self._replicas):
                    raise
                self._rest(replica, "lost its connection during a read")
        raise AssertionError("unreachable")  # pragma: no cover

    # -- routing -----------------------------------------------------------------

    async def _connect(self, session: _RoutedSession, options: dict[str, Any]) -> AsyncConnection:
        if session.read_only and self._replicas:
            await self._sample_primary()
            deadline = time.monotonic() + self.wait
            start = next(self._turn) % len(self._replicas)
            for replica in self._replicas[start:] + self._replicas[:start]:
                if time.monotonic() < replica.resting_until:
                    continue
                session.use(replica.engine)
                connection = await self._try(session, replica, options, deadline)
                if connection is not None:
                    replica.reads += 1
                    self._last_target.set(replica)
                    return connection
            self._fallbacks += 1
        session.use(self.primary)
        session.info[_ROUTER_KEY] = None if session.read_only else self
        self._primary_count += 1
        self._last_target.set(None)
        return await session.connect_bound(options)

    async def _try(
        self,
        session: _RoutedSession,
        replica: _Replica,
        options: dict[str, Any],
        deadline: float,
    ) -> AsyncConnection | None:
        """The connection to `replica` if it is fit for this read, else None (session reset)."""
        poll = _POLL_MIN
        waited = False
        try:
            with anyio.fail_after(PROBE_TIMEOUT):
                connection = await session.connect_bound(options)
                raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            while True:
                with anyio.fail_after(PROBE_TIMEOUT):
                    in_recovery, replayed, received, page = await driver.fetchrow(_PROBE)
                if not in_recovery or replayed is None:
                    raise _Unfit("is not a standby in recovery")
                replica.replayed = replayed
                replica.lag = self._lag(replayed, received, page)
                if replica.lag > self.max_lag:
                    raise _Unfit("lags past replica_max_lag")
                if session.after is None or replayed >= session.after:
                    return connection
                if time.monotonic() >= deadline:
                    await session.close()  # behind the token: another one may not be
                    return None
                if not waited:
                    waited = True
                    self._waits += 1
                await anyio.sleep(min(poll, max(0.0, deadline - time.monotonic())))
                poll = min(poll * 2, _POLL_MAX)
        except _Unfit as exc:
            await session.close()
            self._rest(replica, str(exc))
        except Exception as exc:  # unreachable, refused, timed out, failed: skip it
            with anyio.CancelScope(shield=True):
                await session.invalidate()
            self._rest(replica, f"is unavailable ({type(exc).__name__})")
        return None

    def _rest(self, replica: _Replica, why: str) -> None:
        replica.resting_until = time.monotonic() + self.retry_after
        logger.warning("replica %s %s: skipped for %.1fs", replica.url, why, self.retry_after)

    # -- lag and tokens -------------------------------------------------------------

    def _lag(self, replayed: int, received: int | None, page: int) -> float:
        """Seconds since the primary was at the oldest noted position the replica lacks.

        The primary flushes whole pages in the background, so its flush position
        can stop inside a record whose rest it does not flush while idle: the
        standby then has every byte up to it but cannot replay that record. A
        page-aligned receive position a little ahead of the replay position is
        taken for that case, and counts as caught up, for lag only: tokens are
        always compared with the replay position.
        """
        partial = received is not None and 0 < received - replayed <= _PARTIAL_RECORD
        if partial and received is not None and received % page == 0:
            replayed = received
        for noted_at, lsn in self._samples:
            if lsn > replayed:
                return time.monotonic() - noted_at
        return 0.0

    def _note(self, lsn: int) -> None:
        now = time.monotonic()
        horizon = now - max(10.0, 4 * self.max_lag)
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        self._samples.append((now, lsn))

    async def _sample_primary(self) -> None:
        """Note the primary's WAL position if no note is recent (the lag reference)."""
        if self._sampling or (
            self._samples and time.monotonic() - self._samples[-1][0] < SAMPLE_EVERY
        ):
            return
        self._sampling = True  # one sampler at a time; the others use the notes they have
        try:
            with anyio.fail_after(PROBE_TIMEOUT):
                async with self.primary.connect() as connection:
                    raw = await connection.get_raw_connection()
                    driver: Any = raw.driver_connection
                    lsn = await driver.fetchval(_PRIMARY_LSN)
            self._note(lsn)
        except Exception as exc:  # the primary is down: replicas are measured against older notes
            logger.warning("could not sample the primary's WAL position (%s)", type(exc).__name__)
        finally:
            self._sampling = False

    def _committed(self, lsn: int | None) -> None:
        if lsn is None:  # unknown position: make the next reads wait as long as they may
            lsn = (self._latest or 0) + 1 if not self._samples else self._samples[-1][1] + 1
        self._task_token.set(lsn)
        if self._latest is None or lsn > self._latest:
            self._latest = lsn
        self._note(lsn)


class _Unfit(Exception):
    """A replica answered but may not serve this read."""


class _TrackedSession(Session):
    """The sync session under `_RoutedSession`: its commits note the primary's position."""


class _RoutedSession(AsyncSession):
    """An `AsyncSession` that picks its engine (primary or a replica) when it first connects."""

    sync_session_class = _TrackedSession

    def __init__(self, router: Replicas, *, read_only: bool, after: int | None) -> None:
        super().__init__(bind=router.primary, expire_on_commit=False)
        self.router = router
        self.read_only = read_only
        self.after = after
        self._routed = False

    def use(self, engine: AsyncEngine) -> None:
        self.bind = engine
        self.sync_session.bind = engine.sync_engine

    async def connect_bound(self, options: dict[str, Any]) -> AsyncConnection:
        return await super().connection(**options)

    async def connection(  # type: ignore[override]
        self, **options: Any
    ) -> AsyncConnection:
        if self._routed:
            return await super().connection(**options)
        self._routed = True
        return await self.router._connect(self, options)


@event.listens_for(_TrackedSession, "after_begin")
def _remember_connection(
    session: Session, transaction: SessionTransaction, connection: Connection
) -> None:
    if session.info.get(_ROUTER_KEY) is not None:
        session.info[_CONNECTION_KEY] = connection.connection.driver_connection


@event.listens_for(_TrackedSession, "after_commit")
def _note_commit_position(session: Session) -> None:
    """Read the primary's WAL position on the committed connection, before it goes back."""
    router: Replicas | None = session.info.get(_ROUTER_KEY)
    driver = session.info.pop(_CONNECTION_KEY, None)
    if router is None or driver is None:
        return
    lsn: int | None = None
    try:
        lsn = await_(_fetch_position(driver))
    except Exception as exc:
        logger.warning("could not read the commit's WAL position (%s)", type(exc).__name__)
    router._committed(lsn)


async def _fetch_position(driver: Any) -> int:
    with anyio.CancelScope(shield=True):
        row = await driver.fetchrow(_COMMIT_LSN, timeout=PROBE_TIMEOUT)
    return wal_end(*row)


def wal_end(insert: int, page: int, segment: int) -> int:
    """The end of the WAL written so far, from ``pg_current_wal_insert_lsn()``.

    At a page boundary the insert position points past the next page's header,
    a position no record ends at: a standby that replayed everything reports the
    boundary itself, and would look behind forever while the primary is idle.
    Only that exact case moves back; every other position is the end of a record.
    """
    offset = insert % page
    header = _LONG_HEADER if insert % segment < page else _SHORT_HEADER  # a first page
    return insert - offset if offset == header else insert
