"""psycopg 3, the second peer: the stack a user picks instead of asyncpg.

SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3 (``postgresql+psycopg``).
Here it runs in its pooler-safe setting, ``prepare_threshold=None`` (never a
named prepared statement: one round trip per statement, as psycopg sends
Parse/Bind/Describe/Execute/Sync at once), with the pool harbordb's own engine
has (QueuePool of the same size, `hide_parameters`), on the same server socket
or PgBouncer as the asyncpg variants. Three variants per workload:

- ``psycopg-selectinload`` and ``psycopg-core-in``: the very functions behind
  ``selectinload`` and ``core-in``, run on the psycopg engine (`PsycopgPeer.on`);
- ``psycopg-in``: raw psycopg 3 (`benchmarks.psycopg_raw`), the statements of
  ``asyncpg-in`` with ``= ANY(%s::bigint[])`` array binds, in one transaction.

Without the ``psycopg`` package, the rows are replaced by a note.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import URL, event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from benchmarks.core import Case, Lab, Op, Variant
from benchmarks.psycopg_wire import WireCount, WireTrace, nothing_to_count
from harbordb.config import Settings
from harbordb.db import normalize_url

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from harbor_commerce.uow import CommerceWork
    from harbordb import Database

NOT_INSTALLED = (
    "psycopg 3 is not installed, so the psycopg rows are missing from W1-W4 "
    "(pip install -r benchmarks/requirements.txt)"
)
SKIPPED = "psycopg 3 not installed"
VARIANTS = ("psycopg-selectinload", "psycopg-core-in", "psycopg-in")


def installed() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


def psycopg_url(url: str) -> URL:
    """`url` (any URL harbordb accepts) for SQLAlchemy's psycopg dialect: the same
    host or socket directory, port, user and database."""
    parsed = normalize_url(url).difference_update_query(["prepared_statement_cache_size"])
    query = dict(parsed.query)
    if "ssl" in query:  # normalize_url turned libpq's sslmode into asyncpg's ssl
        query["sslmode"] = query.pop("ssl")
    return parsed.set(drivername="postgresql+psycopg", query=query)


def conninfo(url: URL) -> dict[str, Any]:
    """libpq connection parameters of a ``postgresql+psycopg`` URL (raw psycopg)."""
    params: dict[str, Any] = {
        "host": url.query.get("host") or url.host,
        "port": url.query.get("port") or url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
        "sslmode": url.query.get("sslmode"),
    }
    return {key: value for key, value in params.items() if value is not None}


@dataclass
class PsycopgPeer:
    """The psycopg engine and session factory, one raw connection, and their trace."""

    engine: AsyncEngine
    raw: AsyncConnection[Any]
    wire: WireTrace
    sessionmaker: async_sessionmaker[AsyncSession] = field(init=False)

    def __post_init__(self) -> None:
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> AsyncSession:
        """A new `AsyncSession` on psycopg, made as `Database.session` makes them."""
        return self.sessionmaker()

    def on(self, lab: Lab) -> Lab:
        """`lab` with this peer in place of harbordb's `Database`: for the workloads'
        ORM and Core functions, which use only `lab.db.session()` and `lab.db.engine`."""
        return replace(lab, db=cast("Database[CommerceWork]", self))


async def start(
    url: str, settings: Settings, stack: AsyncExitStack, notes: list[str]
) -> PsycopgPeer | None:
    """Open the psycopg engine and raw connection; close them when `stack` closes.
    None (and a note) when psycopg is not installed."""
    if not installed():
        notes.append(NOT_INSTALLED + ".")
        return None
    import psycopg

    target = psycopg_url(url)
    wire = WireTrace()
    engine = create_async_engine(
        target,
        # What harbordb's engine does (`harbordb.db.create_engine`), for psycopg:
        # bound values out of messages, QueuePool of the same size, no prepared
        # statements (pooler-safe). harbordb's checkout ping is left out: it only
        # pings a connection idle for over a second, which back-to-back runs never are.
        hide_parameters=True,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_recycle=settings.pool_recycle,
        pool_timeout=settings.pool_timeout,
        connect_args={
            "prepare_threshold": None,
            "application_name": settings.application_name,
            "connect_timeout": max(1, round(settings.connect_timeout)),
        },
    )
    stack.push_async_callback(engine.dispose)

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        wire.add(dbapi_connection.driver_connection)

    event.listen(engine.sync_engine, "connect", on_connect)
    raw = await psycopg.AsyncConnection.connect(
        **conninfo(target),
        prepare_threshold=None,
        autocommit=True,  # transactions are explicit, as asyncpg's are
        application_name=settings.application_name,
    )
    stack.push_async_callback(raw.close)
    wire.add(raw)
    return PsycopgPeer(engine, raw, wire)


def count_wire(peer: PsycopgPeer | None) -> AbstractContextManager[WireCount]:
    """Count what the peer's connections send in the block (nothing without a peer)."""
    return nothing_to_count() if peer is None else peer.wire.counting()


def add(
    case: Case,
    lab: Lab,
    orm: Callable[[Lab], Op],
    core: Callable[[Lab], Op],
    raw: Callable[[Lab], Op],
) -> None:
    """Append the psycopg variants to `case`: `orm` and `core` (the workload's own
    selectinload and core-in makers) on the psycopg engine, and `raw` (a
    `benchmarks.psycopg_raw` maker); or mark them skipped without psycopg."""
    if lab.psycopg is None:
        for key in VARIANTS:
            case.skipped[key] = SKIPPED
        return
    on_psycopg = lab.psycopg.on(lab)
    case.variants += [
        Variant("psycopg-selectinload", orm(on_psycopg)),
        Variant("psycopg-core-in", core(on_psycopg)),
        Variant("psycopg-in", raw(lab)),
    ]
